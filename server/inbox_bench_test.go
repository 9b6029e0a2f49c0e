package server_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/quicpush/quicpush/client"
	"github.com/quicpush/quicpush/internal/netem"
	"github.com/quicpush/quicpush/server"
	"github.com/quicpush/quicpush/store"
	"github.com/quicpush/quicpush/stream"
	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// BenchmarkOfflineCatchUp: 10k messages wait in bob's inbox (Badger); bob
// connects through a relay with 50 ms RTT and catches up. Reported per run:
// the time from dialing to the last message handled, the time to the first
// one, and the page requests (each one round trip). "unpaged" asks for the
// whole backlog in one page; "repair" is a plain subscription that catches
// up with repair streams of the server's repair batch (1000), acks apart.
// Run: go test -run=NONE -bench=OfflineCatchUp -benchtime=1x ./server/
func BenchmarkOfflineCatchUp(b *testing.B) {
	const waiting = 10000
	for _, tc := range []struct {
		name  string
		page  int
		paged bool
	}{
		{"paged-100", 100, true}, {"paged-500", 500, true}, {"paged-1000", 1000, true},
		{"unpaged", waiting, true}, {"repair-1000", 0, false},
	} {
		b.Run(tc.name, func(b *testing.B) {
			db, err := store.Open(b.TempDir(), store.Options{})
			require.NoError(b, err)
			b.Cleanup(func() { db.Close() })
			fillInbox(b, db, "bob", "alice", waiting)
			ts := runServer(b, server.Config{Store: db, InboxPageSize: max(tc.page, 1), InboxMaxPageSize: waiting})
			half := netem.Link{Delay: 25 * time.Millisecond}
			relay, err := netem.Start(context.Background(), netem.Config{Upstream: ts.Addr, Uplink: half, Downlink: half, Logger: quietLog})
			require.NoError(b, err)
			b.Cleanup(func() { relay.Close() })
			behind := &testServer{Server: ts.Server, Addr: relay.Addr().String(), CA: ts.CA}

			var total, first time.Duration
			var pages uint64
			for b.Loop() {
				t0 := time.Now()
				bob := dial(b, behind, client.Config{Token: "bob"})
				done := make(chan struct{})
				n := 0
				handle := func(uint64) {
					if n++; n == 1 {
						first += time.Since(t0)
					}
					if n == waiting {
						close(done)
					}
				}
				zero := uint64(0)
				if tc.paged {
					_, err = bob.Inbox(context.Background(), client.InboxOptions{Since: &zero,
						OnMessage: func(m client.ChatMessage) error { handle(m.Seq); return nil }})
				} else {
					_, err = bob.Session("chat").Subscribe(context.Background(), stream.InboxChannel("bob"), client.SubscribeOptions{Since: &zero},
						func(m client.Message) error { handle(m.Seq); return nil })
				}
				require.NoError(b, err)
				select {
				case <-done:
				case <-time.After(5 * time.Minute):
					b.Fatalf("%d of %d after 5 minutes", n, waiting)
				}
				total += time.Since(t0)
				pages += bob.Stats().Pages
				bob.Close()
			}
			b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms-all/op")
			b.ReportMetric(float64(first.Milliseconds())/float64(b.N), "ms-first/op")
			if tc.paged {
				b.ReportMetric(float64(pages)/float64(b.N), "pages/op")
			}
		})
	}
}

// fillInbox stores n messages from sender in user's inbox, as ChatSend
// would.
func fillInbox(b *testing.B, db *store.DB, user, sender string, n int) {
	var reqs []store.AppendRequest
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("m-%d", i)
		data, err := proto.Marshal(&pb.InboxRecord{Kind: pb.InboxRecord_KIND_MESSAGE, Peer: sender, Id: id, Data: make([]byte, 100)})
		require.NoError(b, err)
		reqs = append(reqs, store.AppendRequest{Channel: stream.InboxChannel(user), From: sender, ID: id, Data: data})
		if len(reqs) == 1000 || i == n {
			_, err := db.Append(context.Background(), reqs)
			require.NoError(b, err)
			reqs = reqs[:0]
		}
	}
}
