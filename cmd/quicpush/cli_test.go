package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/certs"
	"github.com/quicpush/quicpush/client"
	"github.com/quicpush/quicpush/server"
	"github.com/quicpush/quicpush/store"
	"github.com/quicpush/quicpush/store/memstore"
)

// testServer is a quicpush server on 127.0.0.1 with a dev certificate.
type testServer struct {
	addr string
	ca   string // the CA file to pass as --ca
}

// startServer serves st on a random UDP port until the test ends.
func startServer(t *testing.T, st server.Store, auth func(context.Context, server.HelloEvent) (server.HelloReply, error)) testServer {
	t.Helper()
	dev, err := certs.EnsureDev(filepath.Join(t.TempDir(), "certs"), nil)
	require.NoError(t, err)
	cert, err := certs.Load(dev.Cert, dev.Key)
	require.NoError(t, err)
	srv, err := server.New(server.Config{
		Store:        st,
		TLSConfig:    &tls.Config{GetCertificate: cert.GetCertificate},
		Logger:       slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
		Authenticate: auth,
	})
	require.NoError(t, err)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	addr, err := srv.Listen(pc)
	require.NoError(t, err)
	t.Cleanup(func() {
		srv.Close()
		pc.Close()
	})
	return testServer{addr: addr.String(), ca: dev.CA}
}

func startMemServer(t *testing.T) testServer {
	return startServer(t, memstore.New(memstore.Options{}), nil)
}

// startBadgerServer serves a real Badger store, for tests where durability
// and positions across runs matter.
func startBadgerServer(t *testing.T) testServer {
	db, err := store.Open(t.TempDir(), store.Options{})
	require.NoError(t, err)
	ts := startServer(t, db, nil)
	t.Cleanup(func() { require.NoError(t, db.Close()) }) // after the server's cleanup
	return ts
}

// syncBuffer is a bytes.Buffer that a command may write while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type result struct {
	code           int
	stdout, stderr string
}

// quicpush runs the CLI in-process against ts.
func (ts testServer) quicpush(t *testing.T, args ...string) result {
	t.Helper()
	var stdout, stderr syncBuffer
	code := run(t.Context(), append([]string{"--server", ts.addr, "--ca", ts.ca, "--log-level", "warn"}, args...), &stdout, &stderr)
	return result{code, stdout.String(), stderr.String()}
}

// background runs the CLI in a goroutine; wait returns its result.
func (ts testServer) background(t *testing.T, args ...string) (stderr *syncBuffer, wait func() result) {
	t.Helper()
	var stdout syncBuffer
	stderr = &syncBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(t.Context(), append([]string{"--server", ts.addr, "--ca", ts.ca}, args...), &stdout, stderr)
	}()
	return stderr, func() result {
		t.Helper()
		select {
		case code := <-done:
			return result{code, stdout.String(), stderr.String()}
		case <-time.After(30 * time.Second):
			t.Fatalf("quicpush %v still running after 30s; stdout:\n%s\nstderr:\n%s", args, stdout.String(), stderr.String())
			return result{}
		}
	}
}

// waitSubscribed waits until a background sub has subscribed to n channels.
func waitSubscribed(t *testing.T, stderr *syncBuffer, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		return strings.Count(stderr.String(), "msg=subscribed") == n
	}, 10*time.Second, 5*time.Millisecond, "sub did not subscribe; stderr:\n%s", stderr)
}

// lines decodes JSON lines into T.
func lines[T any](t *testing.T, out string) []T {
	t.Helper()
	var res []T
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var v T
		require.NoError(t, json.Unmarshal(sc.Bytes(), &v), "line %q", sc.Text())
		res = append(res, v)
	}
	return res
}

func requireOK(t *testing.T, r result) {
	t.Helper()
	require.Equal(t, 0, r.code, "stderr:\n%s", r.stderr)
}

func TestPubThenHistory(t *testing.T) {
	ts := startMemServer(t)
	pub := ts.quicpush(t, "pub", "room/a", "--count", "5", "--data", "hello {n}")
	requireOK(t, pub)
	acks := lines[pubLine](t, pub.stdout)
	require.Len(t, acks, 5)
	for i, a := range acks {
		require.Equal(t, "room/a", a.Channel)
		require.Equal(t, uint64(i+1), a.Seq)
		require.Equal(t, acks[0].Epoch, a.Epoch)
		require.NotZero(t, a.Epoch)
		require.False(t, a.Duplicate)
	}

	hist := ts.quicpush(t, "history", "room/a")
	requireOK(t, hist)
	msgs := lines[messageLine](t, hist.stdout)
	require.Len(t, msgs, 5)
	for i, m := range msgs {
		require.Equal(t, messageLine{
			Channel: "room/a", Seq: uint64(i + 1), Epoch: acks[i].Epoch, Class: "reliable", Data: fmt.Sprintf("hello %d", i+1),
			Repaired: true, ID: acks[i].ID, From: "anonymous", Time: m.Time,
		}, m)
		require.WithinDuration(t, time.Now(), m.Time, time.Minute)
	}

	part := ts.quicpush(t, "history", "room/a", "--from", "2", "--to", "3")
	requireOK(t, part)
	msgs = lines[messageLine](t, part.stdout)
	require.Len(t, msgs, 2)
	require.Equal(t, []uint64{2, 3}, []uint64{msgs[0].Seq, msgs[1].Seq})
}

// TestSubCount subscribes to two channels on two sessions of one
// connection and exits after the messages of both.
func TestSubCount(t *testing.T) {
	ts := startMemServer(t)
	_, wait := ts.background(t, "sub", "classroom:room/a", "chat:room/b", "--since", "0", "--count", "6", "--timeout", "20s")
	requireOK(t, ts.quicpush(t, "pub", "room/a", "--count", "3", "--data", "a{n}"))
	requireOK(t, ts.quicpush(t, "pub", "room/b", "--count", "3", "--data", "b{n}"))
	r := wait()
	requireOK(t, r)
	got := map[string][]messageLine{}
	for _, m := range lines[messageLine](t, r.stdout) {
		got[m.Channel] = append(got[m.Channel], m)
	}
	for channel, session := range map[string]string{"room/a": "classroom", "room/b": "chat"} {
		require.Len(t, got[channel], 3, channel)
		for i, m := range got[channel] {
			require.Equal(t, session, m.Session)
			require.Equal(t, uint64(i+1), m.Seq)
			require.Equal(t, fmt.Sprintf("%c%d", channel[5], i+1), m.Data)
			require.Equal(t, "reliable", m.Class)
		}
	}
}

func TestSubTimesOut(t *testing.T) {
	ts := startMemServer(t)
	requireOK(t, ts.quicpush(t, "pub", "room/a"))
	r := ts.quicpush(t, "sub", "room/a", "--since", "0", "--count", "3", "--timeout", "500ms")
	require.Equal(t, 1, r.code, r.stderr)
	require.Len(t, lines[messageLine](t, r.stdout), 1)
	require.Contains(t, r.stderr, "timed out: 1 of 3 messages arrived")
}

// TestSubStateResumes is the walkthrough: a sub with --state gets 1..5,
// five more are published while it is down, and the restarted sub gets
// exactly 6..10, by repair.
func TestSubStateResumes(t *testing.T) {
	ts := startBadgerServer(t)
	state := filepath.Join(t.TempDir(), "sub.json")

	stderr, wait := ts.background(t, "sub", "room/demo", "--state", state, "--count", "5", "--timeout", "20s")
	waitSubscribed(t, stderr, 1)
	requireOK(t, ts.quicpush(t, "pub", "room/demo", "--count", "5"))
	first := wait()
	requireOK(t, first)
	msgs := lines[messageLine](t, first.stdout)
	require.Len(t, msgs, 5)
	for i, m := range msgs {
		require.Equal(t, uint64(i+1), m.Seq)
		require.Equal(t, fmt.Sprintf("message %d", i+1), m.Data)
	}

	requireOK(t, ts.quicpush(t, "pub", "room/demo", "--count", "5", "--data", "later {n}"))
	_, wait = ts.background(t, "sub", "room/demo", "--state", state, "--count", "5", "--timeout", "20s")
	second := wait()
	requireOK(t, second)
	msgs = lines[messageLine](t, second.stdout)
	require.Len(t, msgs, 5)
	for i, m := range msgs {
		require.Equal(t, uint64(6+i), m.Seq)
		require.Equal(t, fmt.Sprintf("later %d", i+1), m.Data)
		require.True(t, m.Repaired, "published while sub was down: it comes by repair")
	}
}

// TestSubCountLeavesTheRest checks that messages handed over after the
// count was reached are not saved as handled: the next run starts with them.
func TestSubCountLeavesTheRest(t *testing.T) {
	ts := startMemServer(t)
	state := filepath.Join(t.TempDir(), "sub.json")
	requireOK(t, ts.quicpush(t, "pub", "room/a", "--count", "10"))
	var seqs []uint64
	for range 2 {
		r := ts.quicpush(t, "sub", "room/a", "--since", "0", "--state", state, "--count", "5", "--timeout", "20s")
		requireOK(t, r)
		for _, m := range lines[messageLine](t, r.stdout) {
			seqs = append(seqs, m.Seq)
		}
	}
	require.Equal(t, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, seqs)
}

// handled calls h on its own goroutine, as the SDK does, and reports
// whether h returned (so that the SDK would save the position).
// handled reports whether the handler took m as handled (returned nil).
func handled(h client.Handler, m client.Message) bool { return h(m) == nil }

// TestPrinterHandsBackUnprinted checks that a message that is not printed,
// beyond --count or because stdout failed, is never reported as handled.
func TestPrinterHandsBackUnprinted(t *testing.T) {
	var out syncBuffer
	p := &printer{w: &out, limit: 1, done: make(chan struct{})}
	h := p.message("default")
	require.True(t, handled(h, client.Message{Channel: "room/a", Seq: 1}))
	require.False(t, handled(h, client.Message{Channel: "room/a", Seq: 2}), "beyond --count")
	require.Len(t, lines[messageLine](t, out.String()), 1)
	<-p.done
	require.NoError(t, p.err)

	p = &printer{w: failingWriter{}, done: make(chan struct{})}
	require.False(t, handled(p.message("default"), client.Message{Channel: "room/a", Seq: 1}), "stdout failed")
	<-p.done
	require.ErrorContains(t, p.err, "cannot write to stdout")
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestPubIDIsIdempotent(t *testing.T) {
	ts := startMemServer(t)
	requireOK(t, ts.quicpush(t, "pub", "room/a", "--data", "before"))
	first := ts.quicpush(t, "pub", "room/a", "--count", "3", "--id", "run1")
	requireOK(t, first)
	again := ts.quicpush(t, "pub", "room/a", "--count", "3", "--id", "run1")
	requireOK(t, again)
	a, b := lines[pubLine](t, first.stdout), lines[pubLine](t, again.stdout)
	require.Len(t, a, 3)
	require.Len(t, b, 3)
	for i := range a {
		require.Equal(t, fmt.Sprintf("run1-%d", i+1), a[i].ID)
		require.Equal(t, uint64(i+2), a[i].Seq)
		require.False(t, a[i].Duplicate)
		require.Equal(t, pubLine{Channel: "room/a", Seq: a[i].Seq, Epoch: a[i].Epoch, ID: a[i].ID, Duplicate: true}, b[i])
	}
	hist := ts.quicpush(t, "history", "room/a")
	require.Len(t, lines[messageLine](t, hist.stdout), 4, "nothing stored twice")
}

func TestRateLimitsPublishing(t *testing.T) {
	ts := startMemServer(t)
	start := time.Now()
	requireOK(t, ts.quicpush(t, "pub", "room/a", "--count", "4", "--rate", "20"))
	// A limiter with a burst of 1 spaces 4 messages by 3 intervals of 50 ms.
	require.GreaterOrEqual(t, time.Since(start), 150*time.Millisecond)
}

func TestEnvironment(t *testing.T) {
	ts := startMemServer(t)
	t.Setenv("QUICPUSH_SERVER", ts.addr)
	t.Setenv("QUICPUSH_CA", ts.ca)
	t.Setenv("QUICPUSH_PUB_DATA", "from env")
	var stdout, stderr syncBuffer
	require.Equal(t, 0, run(t.Context(), []string{"pub", "room/env"}, &stdout, &stderr), stderr.String())
	hist := ts.quicpush(t, "history", "room/env")
	require.Equal(t, "from env", lines[messageLine](t, hist.stdout)[0].Data)
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"pub", "room/a", "--bogus"},
		{"pub"},
		{"sub"},
		{"pub", "room/a", "--class", "urgent"},
		{"pub", "room/a", "--count", "0"},
		{"sub", "room a"},
		{"sub", "room/a", "room/a"},
		{"history", "room/a", "--from", "5", "--to", "2"},
		{"--server", "nonsense", "pub", "room/a"},
	} {
		var stdout, stderr syncBuffer
		code := run(t.Context(), args, &stdout, &stderr)
		require.Equal(t, 2, code, "%v: %s", args, stderr.String())
		require.Contains(t, stderr.String(), "--help", args)
		require.Empty(t, stdout.String(), args)
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"sub", "--help"}, {"pub", "--help"}, {"history", "--help"}} {
		var stdout, stderr syncBuffer
		require.Equal(t, 0, run(t.Context(), args, &stdout, &stderr), args)
		require.Contains(t, stdout.String(), "Usage: quicpush", args)
	}
}

func TestUnreachableServer(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := pc.LocalAddr().String()
	pc.Close() // nobody answers there now
	var stdout, stderr syncBuffer
	start := time.Now()
	code := run(t.Context(), []string{"--server", addr, "pub", "room/a", "--timeout", "300ms"}, &stdout, &stderr)
	require.Equal(t, 1, code)
	require.Less(t, time.Since(start), 5*time.Second)
	require.Contains(t, stderr.String(), "cannot reach "+addr+": no answer within 300ms — is quicpushd running?")
}

func TestUntrustedCertificate(t *testing.T) {
	ts := startMemServer(t)
	other, err := certs.EnsureDev(t.TempDir(), nil)
	require.NoError(t, err)
	for _, ca := range []string{other.CA, ""} { // another CA, the system roots
		var stdout, stderr syncBuffer
		code := run(t.Context(), []string{"--server", ts.addr, "--ca", ca, "pub", "room/a", "--timeout", "5s"}, &stdout, &stderr)
		require.Equal(t, 1, code, stderr.String())
		require.Contains(t, stderr.String(), "is not trusted")
		require.Contains(t, stderr.String(), "--ca ./data/certs/ca.pem")
	}
}

func TestSubRefused(t *testing.T) {
	ts := startMemServer(t)
	requireOK(t, ts.quicpush(t, "pub", "room/a"))
	r := ts.quicpush(t, "sub", "room/a", "--since", "100", "--timeout", "5s")
	require.Equal(t, 1, r.code, r.stderr)
	require.Contains(t, r.stderr, "the server refused the subscription to room/a: INVALID_RANGE: position 100 is beyond the head 1")
}

func TestRefused(t *testing.T) {
	ts := startServer(t, memstore.New(memstore.Options{}), func(context.Context, server.HelloEvent) (server.HelloReply, error) {
		return server.HelloReply{}, errors.New("token expired")
	})
	r := ts.quicpush(t, "pub", "room/a", "--timeout", "5s")
	require.Equal(t, 1, r.code, r.stderr)
	require.Contains(t, r.stderr, "refused the connection: UNAUTHORIZED: token expired")
}

// A sub whose token expires is closed with UNAUTHORIZED: it exits 1 at
// once instead of waiting for messages that cannot come.
func TestSubStopsWhenRefusedForGood(t *testing.T) {
	ts := startServer(t, memstore.New(memstore.Options{}), func(context.Context, server.HelloEvent) (server.HelloReply, error) {
		return server.HelloReply{User: "alice", ExpiresAt: time.Now().Add(500 * time.Millisecond)}, nil
	})
	start := time.Now()
	r := ts.quicpush(t, "sub", "room/a", "--timeout", "20s")
	require.Equal(t, 1, r.code, r.stderr)
	require.Contains(t, r.stderr, "the server closed the connection for good: UNAUTHORIZED: token expired")
	require.Less(t, time.Since(start), 10*time.Second)
}
