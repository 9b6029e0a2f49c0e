package httpapi

import (
	"encoding/base64"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/quicpush/quicpush/stream"
)

// History limits: a page holds DefaultHistoryLimit messages unless the
// request asks for up to MaxHistoryLimit.
const (
	DefaultHistoryLimit = 100
	MaxHistoryLimit     = 1000
)

// channel serves GET /v1/channels/{channel...} and
// GET /v1/channels/{channel...}/history. Channel names hold slashes, which
// may be sent as they are or escaped (%2F); a last segment "history" after
// an unescaped slash asks for the history, so the info of a channel named
// "a/history" is at /v1/channels/a%2Fhistory.
func (h *handler) channel(w http.ResponseWriter, r *http.Request) {
	rest := strings.TrimPrefix(r.URL.EscapedPath(), "/v1/channels/")
	rest, history := strings.CutSuffix(rest, "/history")
	channel, err := url.PathUnescape(rest)
	if err != nil {
		h.fail(w, r, badRequest("channel: %v", err))
		return
	}
	if err := stream.ValidateChannel(channel); err != nil {
		h.fail(w, r, badRequest("channel: %s", plain(err)))
		return
	}
	if history {
		h.history(w, r, channel)
		return
	}
	info, err := h.srv.ChannelInfo(r.Context(), channel)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Channel     string `json:"channel"`
		Epoch       uint64 `json:"epoch"`
		First       uint64 `json:"first"`
		Head        uint64 `json:"head"`
		Subscribers int    `json:"subscribers"`
	}{info.Channel, info.Epoch, info.First, info.Last, info.Subscribers})
}

// messageJSON is a stored message, with the fields of quicpush history's
// lines.
type messageJSON struct {
	Channel    string    `json:"channel"`
	Seq        uint64    `json:"seq"`
	Epoch      uint64    `json:"epoch"`
	Class      string    `json:"class"`          // always "reliable": only those are stored
	Data       *string   `json:"data,omitempty"` // the data when it is UTF-8,
	DataBase64 string    `json:"data_base64,omitempty"`
	ID         string    `json:"id"`
	From       string    `json:"from"`
	Time       time.Time `json:"time"`
}

// gapJSON is a range of seqs deleted by retention.
type gapJSON struct {
	From   uint64 `json:"from"`
	To     uint64 `json:"to"`
	Reason string `json:"reason"` // "expired", as in the SDK's gaps
}

// history answers ?from=&to=&limit= (defaults: 1, the head, 100).
func (h *handler) history(w http.ResponseWriter, r *http.Request, channel string) {
	q := r.URL.Query()
	from, e := queryUint(q, "from", 1)
	if e != nil {
		h.fail(w, r, e)
		return
	}
	to, e := queryUint(q, "to", 0)
	if e != nil {
		h.fail(w, r, e)
		return
	}
	limit, e := queryUint(q, "limit", DefaultHistoryLimit)
	if e != nil {
		h.fail(w, r, e)
		return
	}
	switch {
	case from == 0:
		h.fail(w, r, badRequest("from: seqs start at 1"))
		return
	case to != 0 && to < from:
		h.fail(w, r, badRequest("to %d is before from %d", to, from))
		return
	case limit == 0 || limit > MaxHistoryLimit:
		h.fail(w, r, badRequest("limit: must be 1 to %d", MaxHistoryLimit))
		return
	}
	end := to
	if end == 0 {
		end = math.MaxUint64 // the head, whatever it is when read
	}
	msgs, b, err := h.srv.History(r.Context(), channel, from, end, int(limit))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := struct {
		Channel  string        `json:"channel"`
		Epoch    uint64        `json:"epoch"`
		First    uint64        `json:"first"`
		Head     uint64        `json:"head"`
		Gap      *gapJSON      `json:"gap,omitempty"`
		Messages []messageJSON `json:"messages"`
		// Next is where the next page starts when the range holds more.
		Next uint64 `json:"next,omitempty"`
	}{Channel: channel, Epoch: b.Epoch, First: b.First, Head: b.Last, Messages: []messageJSON{}}
	last := min(end, b.Last)
	if from < b.First && from <= last {
		out.Gap = &gapJSON{From: from, To: min(b.First-1, last), Reason: "expired"}
	}
	for _, m := range msgs {
		j := messageJSON{Channel: m.Channel, Seq: m.Seq, Epoch: m.Epoch, Class: "reliable", ID: m.ID, From: m.From, Time: m.Time.UTC()}
		if utf8.Valid(m.Data) {
			s := string(m.Data)
			j.Data = &s
		} else {
			j.DataBase64 = base64.StdEncoding.EncodeToString(m.Data)
		}
		out.Messages = append(out.Messages, j)
	}
	if n := len(msgs); n == int(limit) && msgs[n-1].Seq < last {
		out.Next = msgs[n-1].Seq + 1
	}
	writeJSON(w, http.StatusOK, out)
}

func queryUint(q url.Values, name string, def uint64) (uint64, *apiError) {
	s := q.Get(name)
	if s == "" {
		return def, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, badRequest("%s: %q is not a number", name, s)
	}
	return v, nil
}
