package main

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// quicpush send prints the acknowledgement, then the delivered and read
// receipts; quicpush inbox prints the count, then the records.
func TestSendAndInbox(t *testing.T) {
	ts := startBadgerServer(t)
	_, wait := ts.background(t, "--token", "alice", "send", "bob", "--data", "hello bob", "--id", "m-1", "--wait", "read", "--timeout", "20s")

	// Bob reads his inbox once the message is stored there (history reads
	// the store and acknowledges nothing, unlike inbox).
	require.Eventually(t, func() bool {
		h := ts.quicpush(t, "--token", "bob", "history", "user/bob/inbox")
		return h.code == 0 && strings.Count(h.stdout, "\n") == 1
	}, 15*time.Second, 50*time.Millisecond, "the message never reached bob's inbox")
	res := ts.quicpush(t, "--token", "bob", "inbox", "--mark-read", "--timeout", "10s")
	require.Equal(t, 0, res.code, res.stderr)
	require.Len(t, lines[recordLine](t, res.stdout), 2, res.stdout)
	count := lines[countLine](t, res.stdout)[0]
	require.Equal(t, countLine{Channel: "user/bob/inbox", Waiting: 1, Head: 1, Acked: 0, PageSize: 200}, count)
	msg := lines[recordLine](t, res.stdout)[1]
	require.Equal(t, "message", msg.Kind)
	require.Equal(t, "alice", msg.From)
	require.Equal(t, "m-1", msg.ID)
	require.Equal(t, "hello bob", *msg.Data)
	require.Equal(t, uint64(1), msg.Seq)

	sent := wait()
	if sent.code != 0 {
		h := ts.quicpush(t, "--token", "alice", "history", "user/alice/inbox")
		t.Logf("alice's inbox holds: %s%s", h.stdout, h.stderr)
	}
	require.Equal(t, 0, sent.code, "stdout: %s\nstderr: %s", sent.stdout, sent.stderr)
	ack := lines[sendLine](t, sent.stdout)[0]
	require.Equal(t, sendLine{To: "bob", Channel: "user/bob/inbox", Seq: 1, Epoch: ack.Epoch, ID: "m-1"}, ack)
	receipts := lines[receiptLine](t, sent.stdout)[1:]
	require.Len(t, receipts, 2, "stdout: %s", sent.stdout)
	require.Equal(t, "delivered", receipts[0].Receipt)
	require.Equal(t, "read", receipts[1].Receipt)
	for _, r := range receipts {
		require.Equal(t, "bob", r.Peer)
		require.Equal(t, "m-1", r.ID)
		require.Equal(t, uint64(1), r.PeerSeq)
	}

	// Nothing waits for bob any more; alice's inbox holds her copy and the
	// two receipts, newest first on request.
	res = ts.quicpush(t, "--token", "bob", "inbox")
	require.Equal(t, 0, res.code, res.stderr)
	require.Equal(t, uint64(0), lines[countLine](t, res.stdout)[0].Waiting)
	res = ts.quicpush(t, "--token", "alice", "inbox", "--newest-first")
	require.Equal(t, 0, res.code, res.stderr)
	recs := lines[recordLine](t, res.stdout)[1:]
	var kinds []string
	for _, r := range recs {
		kinds = append(kinds, r.Kind+map[bool]string{true: "(preview)"}[r.Preview])
	}
	require.Equal(t, []string{"sent(preview)", "delivered(preview)", "read(preview)", "sent", "delivered", "read"}, kinds)

	// Sending again with the same id stores nothing twice.
	res = ts.quicpush(t, "--token", "alice", "send", "bob", "--data", "hello bob", "--id", "m-1", "--wait", "none")
	require.Equal(t, 0, res.code, res.stderr)
	again := lines[sendLine](t, res.stdout)[0]
	require.True(t, again.Duplicate)
	require.Equal(t, uint64(1), again.Seq)
}

func TestSendFailures(t *testing.T) {
	ts := startMemServer(t)
	res := ts.quicpush(t, "--token", "alice", "send", "a/b", "--data", "x")
	require.Equal(t, exitUsage, res.code)
	require.Contains(t, res.stderr, "without '/'")
	res = ts.quicpush(t, "--token", "alice", "send", "bob")
	require.Equal(t, exitUsage, res.code, "--data is required")
	res = ts.quicpush(t, "--token", "alice", "send", "alice", "--data", "x")
	require.Equal(t, exitFailure, res.code)
	require.Contains(t, res.stderr, "BAD_REQUEST")
	// Bob never connects: the message is stored, the receipt does not come.
	res = ts.quicpush(t, "--token", "alice", "send", "bob", "--data", "x", "--timeout", "500ms")
	require.Equal(t, exitFailure, res.code)
	require.Len(t, lines[sendLine](t, res.stdout), 1)
	require.True(t, strings.Contains(res.stderr, "no delivered receipt yet"), res.stderr)
}
