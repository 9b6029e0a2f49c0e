package httpapi

import (
	"encoding/base64"
	"fmt"
	"net/http"

	"github.com/quicpush/quicpush/server"
	"github.com/quicpush/quicpush/stream"
)

// DefaultFrom is the publisher of messages whose request names none.
const DefaultFrom = "api"

// MaxBatch is the most messages of one batch. 100 messages of
// stream.MaxMessageSize (6.25 MiB with their keys) stay within one store
// commit (8 MiB by default), so a batch is stored whole or not at all.
const MaxBatch = 100

// Body limits. A message's data travels as a JSON string, where escaping
// can take up to 6 bytes per byte (\u0000), or as base64 (4 per 3); its
// other fields (channel, id, from: up to 511 bytes, 6 times when escaped)
// and the punctuation fit in 4 KiB.
const (
	fieldsRoom     = 4 << 10
	maxPublishBody = 6*stream.MaxMessageSize + fieldsRoom
	// A batch holds MaxBatch messages of the largest size in base64.
	maxBatchBody = MaxBatch * (4*(stream.MaxMessageSize+2)/3 + fieldsRoom)
)

// publishMessage is one message to publish.
type publishMessage struct {
	Channel    string  `json:"channel"`
	Data       *string `json:"data"`        // UTF-8 text,
	DataBase64 *string `json:"data_base64"` // or any bytes in standard base64
	ID         string  `json:"id"`
	From       string  `json:"from"`
}

// publishResult is the answer for one stored message.
type publishResult struct {
	Channel   string `json:"channel"`
	Seq       uint64 `json:"seq"`
	Epoch     uint64 `json:"epoch"`
	ID        string `json:"id"`
	Duplicate bool   `json:"duplicate"` // the id was published before: seq is the original
}

// request checks m (field names prefixed by at, e.g. "messages[2].") and
// returns the server's request.
func (m *publishMessage) request(at string) (server.PublishRequest, *apiError) {
	if err := stream.ValidateChannel(m.Channel); err != nil {
		return server.PublishRequest{}, badRequest("%schannel: %s", at, plain(err))
	}
	if err := stream.ValidateID(m.ID); err != nil {
		return server.PublishRequest{}, badRequest("%sid: %s", at, plain(err))
	}
	var data []byte
	switch {
	case (m.Data == nil) == (m.DataBase64 == nil):
		return server.PublishRequest{}, badRequest("%sdata: set one of data (text) and data_base64", at)
	case m.Data != nil:
		data = []byte(*m.Data)
	default:
		var err error
		if data, err = base64.StdEncoding.DecodeString(*m.DataBase64); err != nil {
			return server.PublishRequest{}, badRequest("%sdata_base64: %v", at, err)
		}
	}
	if len(data) > stream.MaxMessageSize {
		return server.PublishRequest{}, &apiError{http.StatusRequestEntityTooLarge, "too_large",
			fmt.Sprintf("%sdata: %d bytes is over the limit of %d", at, len(data), stream.MaxMessageSize)}
	}
	return server.PublishRequest{Channel: m.Channel, Data: data, ID: m.ID}, nil
}

func checkFrom(from string) (string, *apiError) {
	if from == "" {
		return DefaultFrom, nil
	}
	if len(from) > stream.MaxIDLen {
		return "", badRequest("from: must be at most %d bytes", stream.MaxIDLen)
	}
	return from, nil
}

// publish serves POST /v1/publish: one message.
func (h *handler) publish(w http.ResponseWriter, r *http.Request) {
	var m publishMessage
	if e := decode(w, r, maxPublishBody, false, &m); e != nil {
		h.fail(w, r, e)
		return
	}
	req, e := m.request("")
	if e != nil {
		h.fail(w, r, e)
		return
	}
	from, e := checkFrom(m.From)
	if e != nil {
		h.fail(w, r, e)
		return
	}
	res, err := h.srv.Publish(r.Context(), from, []server.PublishRequest{req})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, publishResult{Channel: req.Channel, Seq: res[0].Seq, Epoch: res[0].Epoch, ID: req.ID, Duplicate: res[0].Duplicate})
}

// publishBatch serves POST /v1/publish/batch: messages stored in order, all
// or none; every message is checked before any is stored.
func (h *handler) publishBatch(w http.ResponseWriter, r *http.Request) {
	var batch struct {
		From     string           `json:"from"`
		Messages []publishMessage `json:"messages"`
	}
	if e := decode(w, r, maxBatchBody, false, &batch); e != nil {
		h.fail(w, r, e)
		return
	}
	switch n := len(batch.Messages); {
	case n == 0:
		h.fail(w, r, badRequest("messages: the batch is empty"))
		return
	case n > MaxBatch:
		h.fail(w, r, &apiError{http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("messages: %d messages is over the limit of %d per batch", n, MaxBatch)})
		return
	}
	from, e := checkFrom(batch.From)
	if e != nil {
		h.fail(w, r, e)
		return
	}
	reqs := make([]server.PublishRequest, len(batch.Messages))
	for i := range batch.Messages {
		m := &batch.Messages[i]
		at := fmt.Sprintf("messages[%d].", i)
		if m.From != "" {
			// One publisher per batch: the batch is one store append.
			h.fail(w, r, badRequest("%sfrom: set from once, beside messages, for the whole batch", at))
			return
		}
		if reqs[i], e = m.request(at); e != nil {
			h.fail(w, r, e)
			return
		}
	}
	res, err := h.srv.Publish(r.Context(), from, reqs)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := struct {
		Results []publishResult `json:"results"`
	}{make([]publishResult, len(res))}
	for i, a := range res {
		out.Results[i] = publishResult{Channel: reqs[i].Channel, Seq: a.Seq, Epoch: a.Epoch, ID: reqs[i].ID, Duplicate: a.Duplicate}
	}
	writeJSON(w, http.StatusOK, out)
}
