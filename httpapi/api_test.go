package httpapi_test

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/quicpush/quicpush/certs"
	"github.com/quicpush/quicpush/client"
	"github.com/quicpush/quicpush/httpapi"
	"github.com/quicpush/quicpush/server"
	"github.com/quicpush/quicpush/store"
	"github.com/quicpush/quicpush/store/memstore"
	"github.com/quicpush/quicpush/stream"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

const apiKey = "test-api-key-0123456789"

// flakyStore fails with store.ErrUnavailable while down is set.
type flakyStore struct {
	server.Store
	down atomic.Bool
}

func (s *flakyStore) Append(ctx context.Context, reqs []store.AppendRequest) ([]store.AppendResult, error) {
	if s.down.Load() {
		return nil, fmt.Errorf("%w: disk gone", store.ErrUnavailable)
	}
	return s.Store.Append(ctx, reqs)
}

func (s *flakyStore) Bounds(ctx context.Context, channel string) (store.Bounds, error) {
	if s.down.Load() {
		return store.Bounds{}, fmt.Errorf("%w: disk gone", store.ErrUnavailable)
	}
	return s.Store.Bounds(ctx, channel)
}

// apiTest is a quicpush server on 127.0.0.1 (QUIC) with the API served
// over real HTTP in front of it.
type apiTest struct {
	mem   *memstore.Store
	store *flakyStore
	srv   *server.Server
	addr  string // QUIC
	tls   *tls.Config
	url   string // HTTP
}

func newAPITest(t *testing.T, opts memstore.Options) *apiTest {
	t.Helper()
	at := &apiTest{mem: memstore.New(opts)}
	at.store = &flakyStore{Store: at.mem}
	dev, err := certs.EnsureDev(t.TempDir(), nil)
	require.NoError(t, err)
	cert, err := certs.Load(dev.Cert, dev.Key)
	require.NoError(t, err)
	at.srv, err = server.New(server.Config{Store: at.store, TLSConfig: &tls.Config{GetCertificate: cert.GetCertificate}, Logger: quiet})
	require.NoError(t, err)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	addr, err := at.srv.Listen(pc)
	require.NoError(t, err)
	at.addr = addr.String()
	pool, err := certs.CAPool(dev.CA)
	require.NoError(t, err)
	at.tls = &tls.Config{RootCAs: pool}

	h, err := httpapi.New(httpapi.Config{Server: at.srv, APIKey: []byte(apiKey), Logger: quiet})
	require.NoError(t, err)
	hs := httptest.NewServer(h)
	at.url = hs.URL
	t.Cleanup(func() {
		hs.Close()
		at.srv.Close()
		pc.Close()
	})
	return at
}

func (at *apiTest) dial(t *testing.T, token string) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, at.addr, client.Config{TLSConfig: at.tls, Token: token, Logger: quiet})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

type response struct {
	status int
	header http.Header
	body   string
}

// request sends method path with body ("" for none) and the API key.
func (at *apiTest) request(t *testing.T, method, path, body string) response {
	t.Helper()
	return at.requestWith(t, method, path, body, "Bearer "+apiKey)
}

func (at *apiTest) requestWith(t *testing.T, method, path, body, authorization string) response {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, at.url+path, r)
	require.NoError(t, err)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return response{resp.StatusCode, resp.Header, string(b)}
}

// ok decodes a 200 answer into T.
func ok[T any](t *testing.T, r response) T {
	t.Helper()
	require.Equal(t, http.StatusOK, r.status, r.body)
	require.Equal(t, "application/json", r.header.Get("Content-Type"))
	var v T
	require.NoError(t, json.Unmarshal([]byte(r.body), &v), r.body)
	return v
}

// requireError checks an error answer.
func requireError(t *testing.T, r response, status int, code, message string) {
	t.Helper()
	require.Equal(t, status, r.status, r.body)
	require.Equal(t, "application/json", r.header.Get("Content-Type"))
	var e struct {
		Error struct{ Code, Message string }
	}
	require.NoError(t, json.Unmarshal([]byte(r.body), &e), r.body)
	require.Equal(t, code, e.Error.Code, r.body)
	require.Contains(t, e.Error.Message, message)
}

// requireEmpty checks that nothing was ever stored in channel.
func (at *apiTest) requireEmpty(t *testing.T, channel string) {
	t.Helper()
	b, err := at.mem.Bounds(context.Background(), channel)
	require.NoError(t, err)
	require.Zero(t, b.Last, "nothing may be stored in %s", channel)
}

type publishResult struct {
	Channel   string
	Seq       uint64
	Epoch     uint64
	ID        string
	Duplicate bool
}

type message struct {
	Channel    string
	Seq        uint64
	Epoch      uint64
	Class      string
	Data       *string
	DataBase64 string `json:"data_base64"`
	ID         string
	From       string
	Time       time.Time
}

type history struct {
	Channel     string
	Epoch       uint64
	First, Head uint64
	Gap         *struct {
		From, To uint64
		Reason   string
	}
	Messages []message
	Next     uint64
}

func TestPublishReachesSubscribersAndHistory(t *testing.T) {
	at := newAPITest(t, memstore.Options{})
	sub := at.dial(t, "bob")
	got := make(chan client.Message, 10)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err := sub.Session("s").Subscribe(ctx, "room/demo", client.SubscribeOptions{}, func(m client.Message) error {
		got <- m
		return nil
	})
	require.NoError(t, err)

	p := ok[publishResult](t, at.request(t, "POST", "/v1/publish", `{"channel":"room/demo","data":"quiz starts now","id":"quiz-1"}`))
	require.Equal(t, publishResult{Channel: "room/demo", Seq: 1, Epoch: p.Epoch, ID: "quiz-1"}, p)
	require.NotZero(t, p.Epoch)
	select {
	case m := <-got:
		require.Equal(t, "quiz starts now", string(m.Data))
		require.Equal(t, "api", m.From)
		require.Equal(t, uint64(1), m.Seq)
	case <-ctx.Done():
		t.Fatal("the subscriber got nothing")
	}

	again := ok[publishResult](t, at.request(t, "POST", "/v1/publish", `{"channel":"room/demo","data":"quiz starts now","id":"quiz-1"}`))
	require.True(t, again.Duplicate, "same id: stored once")
	require.Equal(t, uint64(1), again.Seq)

	binary := base64.StdEncoding.EncodeToString([]byte{0xff, 0x00, 0xfe})
	p = ok[publishResult](t, at.request(t, "POST", "/v1/publish", `{"channel":"room/demo","data_base64":"`+binary+`","from":"grader"}`))
	require.Equal(t, uint64(2), p.Seq)
	require.Empty(t, p.ID)

	for _, path := range []string{"/v1/channels/room/demo/history", "/v1/channels/room%2Fdemo/history"} {
		h := ok[history](t, at.request(t, "GET", path, ""))
		require.Equal(t, "room/demo", h.Channel)
		require.Equal(t, uint64(1), h.First)
		require.Equal(t, uint64(2), h.Head)
		require.Nil(t, h.Gap)
		require.Zero(t, h.Next)
		require.Len(t, h.Messages, 2)
		m := h.Messages[0]
		require.Equal(t, "quiz starts now", *m.Data)
		require.Equal(t, []any{"room/demo", uint64(1), p.Epoch, "reliable", "quiz-1", "api"}, []any{m.Channel, m.Seq, m.Epoch, m.Class, m.ID, m.From})
		require.WithinDuration(t, time.Now(), m.Time, time.Minute)
		require.Nil(t, h.Messages[1].Data, "not UTF-8: base64")
		require.Equal(t, binary, h.Messages[1].DataBase64)
		require.Equal(t, "grader", h.Messages[1].From)
	}

	type info struct {
		Channel            string
		Epoch, First, Head uint64
		Subscribers        int
	}
	require.Equal(t, info{"room/demo", p.Epoch, 1, 2, 1}, ok[info](t, at.request(t, "GET", "/v1/channels/room/demo", "")))
	require.Equal(t, info{"room/none", 0, 1, 0, 0}, ok[info](t, at.request(t, "GET", "/v1/channels/room%2Fnone", "")))
	// A channel whose name ends in /history: escape the last slash.
	require.Equal(t, info{"a/history", 0, 1, 0, 0}, ok[info](t, at.request(t, "GET", "/v1/channels/a%2Fhistory", "")))
}

func TestBatch(t *testing.T) {
	at := newAPITest(t, memstore.Options{})
	type results struct{ Results []publishResult }
	r := ok[results](t, at.request(t, "POST", "/v1/publish/batch", `{"from":"backend","messages":[
		{"channel":"room/a","data":"a1"},{"channel":"room/b","data":"b1","id":"b-1"},{"channel":"room/a","data_base64":"YTI="}]}`))
	require.Len(t, r.Results, 3)
	require.Equal(t, []uint64{1, 1, 2}, []uint64{r.Results[0].Seq, r.Results[1].Seq, r.Results[2].Seq})
	require.Equal(t, "room/b", r.Results[1].Channel)
	require.Equal(t, "b-1", r.Results[1].ID)
	h := ok[history](t, at.request(t, "GET", "/v1/channels/room/a/history", ""))
	require.Equal(t, "a2", *h.Messages[1].Data)
	require.Equal(t, "backend", h.Messages[1].From)

	// One bad message refuses the whole batch, before anything is stored.
	for _, tc := range []struct {
		body          string
		status        int
		code, message string
	}{
		{`{"messages":[{"channel":"room/x","data":"1"},{"channel":"room/y","data":"2"},{"channel":"room z","data":"3"}]}`,
			400, "invalid_request", `messages[2].channel: channel name "room z" has a space or control character`},
		{`{"messages":[{"channel":"room/x","data":"1"},{"channel":"room/y","data":"2","from":"eve"}]}`,
			400, "invalid_request", "messages[1].from: set from once, beside messages, for the whole batch"},
		{`{"messages":[{"channel":"room/x","data":"1"},{"channel":"room/y"}]}`,
			400, "invalid_request", "messages[1].data: set one of data (text) and data_base64"},
		{`{"messages":[{"channel":"room/x","data":"1"},{"channel":"room/y","data":"2","id":"` + strings.Repeat("i", 129) + `"}]}`,
			400, "invalid_request", "messages[1].id: message id longer than 128 bytes"},
		{`{"messages":[{"channel":"room/x","data":"1"},{"channel":"room/y","data_base64":"%%%"}]}`,
			400, "invalid_request", "messages[1].data_base64: illegal base64 data"},
		{`{"messages":[{"channel":"room/x","data":"1"},{"channel":"room/y","data_base64":"` + base64.StdEncoding.EncodeToString(make([]byte, stream.MaxMessageSize+1)) + `"}]}`,
			413, "too_large", "messages[1].data: 65537 bytes is over the limit of 65536"},
		{`{"messages":[` + strings.Repeat(`{"channel":"room/x","data":"1"},`, httpapi.MaxBatch) + `{"channel":"room/y","data":"1"}]}`,
			413, "too_large", "messages: 101 messages is over the limit of 100 per batch"},
		{`{"messages":[]}`, 400, "invalid_request", "messages: the batch is empty"},
		{`{"messages":[{"channel":"room/x","data":"1"}], "form":"typo"}`, 400, "malformed_json", `unknown field "form"`},
		{`{"from":"` + strings.Repeat("f", 129) + `","messages":[{"channel":"room/x","data":"1"}]}`, 400, "invalid_request", "from: must be at most 128 bytes"},
	} {
		requireError(t, at.request(t, "POST", "/v1/publish/batch", tc.body), tc.status, tc.code, tc.message)
		at.requireEmpty(t, "room/x")
		at.requireEmpty(t, "room/y")
	}
}

func TestHistoryGapsAndPages(t *testing.T) {
	at := newAPITest(t, memstore.Options{MaxMessages: 3})
	for n := 1; n <= 6; n++ {
		ok[publishResult](t, at.request(t, "POST", "/v1/publish", fmt.Sprintf(`{"channel":"room/h","data":"m%d"}`, n)))
	}
	require.NoError(t, at.mem.RunRetention(t.Context()))

	h := ok[history](t, at.request(t, "GET", "/v1/channels/room/h/history", ""))
	require.Equal(t, uint64(4), h.First)
	require.Equal(t, uint64(6), h.Head)
	require.NotNil(t, h.Gap)
	require.Equal(t, []any{uint64(1), uint64(3), "expired"}, []any{h.Gap.From, h.Gap.To, h.Gap.Reason})
	require.Len(t, h.Messages, 3)
	require.Equal(t, uint64(4), h.Messages[0].Seq)

	h = ok[history](t, at.request(t, "GET", "/v1/channels/room/h/history?from=2&to=2", ""))
	require.Equal(t, []any{uint64(2), uint64(2)}, []any{h.Gap.From, h.Gap.To}, "the gap stays within the range")
	require.Empty(t, h.Messages)

	h = ok[history](t, at.request(t, "GET", "/v1/channels/room/h/history?from=4&limit=2", ""))
	require.Nil(t, h.Gap)
	require.Equal(t, []uint64{4, 5}, []uint64{h.Messages[0].Seq, h.Messages[1].Seq})
	require.Equal(t, uint64(6), h.Next)
	h = ok[history](t, at.request(t, "GET", "/v1/channels/room/h/history?from=6&limit=2", ""))
	require.Len(t, h.Messages, 1)
	require.Zero(t, h.Next, "the last page")
	h = ok[history](t, at.request(t, "GET", "/v1/channels/room/h/history?from=4&to=5&limit=2", ""))
	require.Zero(t, h.Next, "the range is done")

	for query, want := range map[string]string{
		"?from=0":      "from: seqs start at 1",
		"?from=x":      `from: "x" is not a number`,
		"?from=5&to=4": "to 4 is before from 5",
		"?limit=0":     "limit: must be 1 to 1000",
		"?limit=1001":  "limit: must be 1 to 1000",
		"?to=-1":       `to: "-1" is not a number`,
	} {
		requireError(t, at.request(t, "GET", "/v1/channels/room/h/history"+query, ""), 400, "invalid_request", want)
	}
}

func TestDisconnect(t *testing.T) {
	at := newAPITest(t, memstore.Options{})
	alice := at.dial(t, "alice")
	type closed struct {
		User   string
		Closed int
	}
	require.Equal(t, closed{"nobody", 0}, ok[closed](t, at.request(t, "POST", "/v1/users/nobody/disconnect", "")))
	requireError(t, at.request(t, "POST", "/v1/users/alice/disconnect", `{"code":"FORBIDDEN"}`), 400, "invalid_request", `code: "FORBIDDEN" is not one of UNAUTHORIZED, SHUTTING_DOWN`)
	requireError(t, at.request(t, "POST", "/v1/users/alice/disconnect", `{"reason":"`+strings.Repeat("r", 257)+`"}`), 400, "invalid_request", "reason: must be at most 256 bytes")
	require.Nil(t, alice.Err(), "refused requests disconnect nobody")

	// SHUTTING_DOWN: the client comes back.
	require.Equal(t, closed{"alice", 1}, ok[closed](t, at.request(t, "POST", "/v1/users/alice/disconnect", `{"code":"SHUTTING_DOWN","reason":"moving you"}`)))
	require.Eventually(t, func() bool { return alice.Stats().Connects == 2 }, 10*time.Second, 10*time.Millisecond)
	require.Nil(t, alice.Err())

	// The default, UNAUTHORIZED, keeps it out.
	require.Equal(t, closed{"alice", 1}, ok[closed](t, at.request(t, "POST", "/v1/users/alice/disconnect", `{"reason":"token revoked"}`)))
	require.Eventually(t, func() bool { return alice.Err() != nil }, 10*time.Second, 10*time.Millisecond)
	require.ErrorIs(t, alice.Err(), &stream.Error{Code: stream.Unauthorized})
	require.ErrorContains(t, alice.Err(), "token revoked")

	// A user name may hold a slash.
	slashy := at.dial(t, "team/bob")
	require.Equal(t, closed{"team/bob", 1}, ok[closed](t, at.request(t, "POST", "/v1/users/team%2Fbob/disconnect", "")))
	require.Eventually(t, func() bool { return slashy.Err() != nil }, 10*time.Second, 10*time.Millisecond)
	require.ErrorContains(t, slashy.Err(), "disconnected by the server's operator")
}

// Every error status, and nothing stored by a refused publish.
func TestErrors(t *testing.T) {
	at := newAPITest(t, memstore.Options{})
	publish := func(body, authorization string) response {
		t.Helper()
		r := at.requestWith(t, "POST", "/v1/publish", body, authorization)
		at.requireEmpty(t, "room/x")
		return r
	}
	good := `{"channel":"room/x","data":"hello"}`

	// 401, before anything else, on every route.
	for _, authorization := range []string{"", "Bearer", "Bearer wrong-key-0123456789", "Basic " + apiKey, "Bearer " + apiKey + "x"} {
		r := publish(good, authorization)
		require.Equal(t, `Bearer realm="quicpush"`, r.header.Get("WWW-Authenticate"))
		requireError(t, r, 401, "unauthorized", "")
	}
	requireError(t, publish(good, ""), 401, "unauthorized", "missing Authorization: Bearer <API key> header")
	requireError(t, publish(good, "Bearer nope"), 401, "unauthorized", "wrong API key")
	requireError(t, at.requestWith(t, "GET", "/v1/nowhere", "", ""), 401, "unauthorized", "")
	requireError(t, at.requestWith(t, "GET", "/v1/channels/room/x", "", "bearer wrong"), 401, "unauthorized", "wrong API key")
	ok[map[string]any](t, at.requestWith(t, "GET", "/v1/channels/room/x", "", "bearer "+apiKey)) // the scheme is case-insensitive

	// 404 and 405.
	requireError(t, at.request(t, "GET", "/v1/nowhere", ""), 404, "not_found", "no route /v1/nowhere")
	requireError(t, at.request(t, "POST", "/v2/publish", good), 404, "not_found", "")
	at.requireEmpty(t, "room/x")
	for _, tc := range []struct{ method, path, allow string }{
		{"GET", "/v1/publish", "POST"},
		{"PUT", "/v1/publish", "POST"},
		{"GET", "/v1/publish/batch", "POST"},
		{"DELETE", "/v1/channels/room/x", "GET, HEAD"},
		{"POST", "/v1/channels/room/x/history", "GET, HEAD"},
		{"GET", "/v1/users/alice/disconnect", "POST"},
	} {
		r := at.request(t, tc.method, tc.path, good)
		requireError(t, r, 405, "method_not_allowed", "use "+strings.Split(tc.allow, ",")[0])
		require.Equal(t, tc.allow, r.header.Get("Allow"))
	}
	at.requireEmpty(t, "room/x")

	// 400.
	key := "Bearer " + apiKey
	for body, want := range map[string]string{
		``:                                   "the request body is empty",
		`{`:                                  "the request body is not the expected JSON: unexpected EOF",
		`[]`:                                 "cannot unmarshal array",
		`{"channel":"room/x","data":"a"} {}`: "more data after the JSON object",
		`{"channel":"room/x","data":"a","colour":1}`: `unknown field "colour"`,
		`{"channel":"room/x","data":5}`:              "cannot unmarshal number",
	} {
		requireError(t, publish(body, key), 400, "malformed_json", want)
	}
	for body, want := range map[string]string{
		`{"data":"a"}`:                                                              "channel: channel name must be 1 to 255 bytes",
		`{"channel":"room x","data":"a"}`:                                           "channel: channel name \"room x\" has a space or control character",
		`{"channel":"room/x"}`:                                                      "data: set one of data (text) and data_base64",
		`{"channel":"room/x","data":"a","data_base64":"YQ=="}`:                      "data: set one of data (text) and data_base64",
		`{"channel":"room/x","data_base64":"YQ"}`:                                   "data_base64: illegal base64 data",
		`{"channel":"room/x","data":"a","id":"` + strings.Repeat("i", 129) + `"}`:   "id: message id longer than 128 bytes",
		`{"channel":"room/x","data":"a","from":"` + strings.Repeat("f", 129) + `"}`: "from: must be at most 128 bytes",
	} {
		requireError(t, publish(body, key), 400, "invalid_request", want)
	}
	requireError(t, at.request(t, "GET", "/v1/channels/room%20x", ""), 400, "invalid_request", "has a space or control character")
	requireError(t, at.request(t, "GET", "/v1/channels/", ""), 400, "invalid_request", "channel name must be 1 to 255 bytes")

	// 413: a message over the limit, a body over the cap.
	big := strings.Repeat("x", stream.MaxMessageSize+1)
	requireError(t, publish(`{"channel":"room/x","data":"`+big+`"}`, key), 413, "too_large", "data: 65537 bytes is over the limit of 65536")
	escaped := strings.Repeat(`\u0000`, stream.MaxMessageSize) // the largest message, escaped: accepted
	p := ok[publishResult](t, at.request(t, "POST", "/v1/publish", `{"channel":"room/escaped","data":"`+escaped+`"}`))
	require.Equal(t, uint64(1), p.Seq)
	huge := strings.Repeat(" ", 7*stream.MaxMessageSize)
	requireError(t, publish(`{"channel":"room/x",`+huge+`"data":"a"}`, key), 413, "too_large", "the request body is over")
	requireError(t, at.request(t, "POST", "/v1/publish/batch", `{"messages":[`+strings.Repeat(" ", 10<<20)+`]}`), 413, "too_large", "the request body is over")

	// 503: the store is down.
	at.store.down.Store(true)
	requireError(t, publish(good, key), 503, "unavailable", "the store is unavailable, try again later")
	requireError(t, at.request(t, "GET", "/v1/channels/room/x", ""), 503, "unavailable", "disk gone")
	requireError(t, at.request(t, "GET", "/v1/channels/room/x/history", ""), 503, "unavailable", "disk gone")
	at.store.down.Store(false)
	ok[publishResult](t, at.request(t, "POST", "/v1/publish", good))
}

func TestNew(t *testing.T) {
	_, err := httpapi.New(httpapi.Config{APIKey: []byte(apiKey)})
	require.ErrorContains(t, err, "Config.Server is required")
	at := newAPITest(t, memstore.Options{})
	_, err = httpapi.New(httpapi.Config{Server: at.srv, APIKey: []byte("short")})
	require.ErrorContains(t, err, "the API key must be at least 16 bytes")
}

func TestConfigLogValueRedactsTheKey(t *testing.T) {
	var buf strings.Builder
	slog.New(slog.NewTextHandler(&buf, nil)).Info("api", "config", httpapi.Config{APIKey: []byte(apiKey)})
	require.Contains(t, buf.String(), "config.api_key=[redacted]")
	require.NotContains(t, buf.String(), apiKey)
}
