package main

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/certs"
	"github.com/quicpush/quicpush/client"
)

// member connects as user and subscribes to channel with h.
func (ts testServer) member(t *testing.T, user, channel string, h client.Handler) *client.Client {
	t.Helper()
	pool, err := certs.CAPool(ts.ca)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, ts.addr, client.Config{TLSConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}, Token: user, Logger: quietLog()})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	_, err = c.Session("class").Subscribe(ctx, channel, client.SubscribeOptions{}, h)
	require.NoError(t, err)
	return c
}

func handledOK(client.Message) error { return nil }

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestPubConfirm(t *testing.T) {
	ts := startMemServer(t)
	ts.member(t, "ann", "room/c", handledOK)
	ts.member(t, "bob", "room/c", handledOK)

	r := ts.quicpush(t, "pub", "room/c", "--token", "teacher", "--confirm", "--wait", "10s")
	requireOK(t, r)
	acks := lines[pubLine](t, r.stdout)
	require.Equal(t, uint64(1), acks[0].Seq)
	progress := lines[confirmLine](t, r.stdout)[1:]
	require.NotEmpty(t, progress)
	last := progress[len(progress)-1]
	require.Equal(t, confirmLine{Channel: "room/c", Seq: 1, Confirmed: 2, Total: 2, State: "complete"}, last)

	// A member whose handler never returns never confirms: at --wait the
	// missing one is named, and the command fails.
	stuck := make(chan struct{})
	ts.member(t, "cy", "room/c", func(client.Message) error { <-stuck; return nil })
	t.Cleanup(func() { close(stuck) }) // before the member's Close, which waits for its handler
	r = ts.quicpush(t, "pub", "room/c", "--token", "teacher", "--confirm", "--wait", "1s")
	require.Equal(t, exitFailure, r.code, "stdout:\n%s", r.stdout)
	require.Contains(t, r.stderr, "not all recipients confirmed within 1s: seq 2: 2 of 3 confirmed, missing cy")
	out := lines[confirmLine](t, r.stdout)
	report := out[len(out)-1]
	require.Equal(t, confirmLine{Channel: "room/c", Seq: 2, Confirmed: 2, Total: 3, State: "deadline", Missing: []string{"cy"}}, report)

	// Bad usage: droppable messages cannot be confirmed.
	r = ts.quicpush(t, "pub", "room/c", "--confirm", "--class", "droppable")
	require.Equal(t, exitUsage, r.code)
	require.Contains(t, r.stderr, "--confirm needs reliable messages")
}

func TestPresenceCommand(t *testing.T) {
	ts := startMemServer(t)
	for _, u := range []string{"ann", "bob", "cy"} {
		ts.member(t, u, "room/p", handledOK)
	}
	r := ts.quicpush(t, "presence", "room/p", "--page", "2")
	requireOK(t, r)
	snap := lines[presenceLine](t, r.stdout)[0]
	require.Equal(t, presenceLine{Channel: "room/p", Online: 3, Snapshot: true}, snap)
	pages := lines[membersLine](t, r.stdout)[1:]
	require.Equal(t, []membersLine{
		{Channel: "room/p", Users: []string{"ann", "bob"}, Online: 3, Next: "bob"},
		{Channel: "room/p", Users: []string{"cy"}, Online: 3},
	}, pages)

	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(t.Context(), []string{"--server", ts.addr, "--ca", ts.ca, "presence", "room/p", "--no-members", "--follow", "--for", "3s"}, &stdout, &stderr)
	}()
	require.Eventually(t, func() bool { return stdout.String() != "" }, 10*time.Second, 5*time.Millisecond, "no snapshot; stderr:\n%s", &stderr)
	dan := ts.member(t, "dan", "room/p", handledOK)
	dan.Close()
	select {
	case code := <-done:
		require.Equal(t, exitOK, code, "stderr:\n%s", &stderr)
	case <-time.After(30 * time.Second):
		t.Fatal("presence --follow --for 3s did not end")
	}
	got := lines[presenceLine](t, stdout.String())
	require.Equal(t, 3, got[0].Online)
	var joined, left []string
	for _, l := range got[1:] {
		joined, left = append(joined, l.Joined...), append(left, l.Left...)
	}
	require.Equal(t, []string{"dan"}, joined)
	require.Equal(t, []string{"dan"}, left)
	require.Equal(t, 3, got[len(got)-1].Online)
}
