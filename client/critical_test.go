package client

import (
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// testChannel is a channel with no connection, fed by hand.
func testChannel(t *testing.T) (*channel, *Client, func() []uint64) {
	c := &Client{cfg: Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}.withDefaults()}
	c.log = c.cfg.Logger
	var mu sync.Mutex
	var got []uint64
	ch := newChannel(newSession(c, "s"), "room/x", func(m Message) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, m.Seq)
		return nil
	}, SubscribeOptions{})
	ch.epoch, ch.havePos = 5, true
	t.Cleanup(ch.close)
	return ch, c, func() []uint64 {
		mu.Lock()
		defer mu.Unlock()
		return append([]uint64(nil), got...)
	}
}

func critical(seq uint64) *pb.Push {
	return &pb.Push{Channel: "room/x", Epoch: 5, Seq: seq, Critical: true}
}

// Whichever copy of a critical message arrives, and in whatever order, the
// application gets each seq once and in order.
func TestCriticalCopiesExactlyOnceInOrder(t *testing.T) {
	cases := map[string]func(ch *channel){
		"both copies, stream first": func(ch *channel) {
			for s := uint64(1); s <= 3; s++ {
				ch.onPush(critical(s), false)
				ch.onCopy(critical(s))
			}
		},
		"both copies, copy first": func(ch *channel) {
			for s := uint64(1); s <= 3; s++ {
				ch.onCopy(critical(s))
				ch.onPush(critical(s), false)
			}
		},
		"only the copies": func(ch *channel) {
			for s := uint64(1); s <= 3; s++ {
				ch.onCopy(critical(s))
			}
		},
		"only the stream": func(ch *channel) {
			for s := uint64(1); s <= 3; s++ {
				ch.onPush(critical(s), false)
			}
		},
		"out of order": func(ch *channel) {
			ch.onCopy(critical(3)) // ahead of 1 and 2: waits, never bypasses them
			ch.onCopy(critical(2))
			ch.onPush(critical(1), false)
			ch.onPush(critical(2), false)
			ch.onPush(critical(3), false)
			ch.onCopy(critical(1))
		},
	}
	for name, feed := range cases {
		t.Run(name, func(t *testing.T) {
			ch, c, got := testChannel(t)
			feed(ch)
			require.Eventually(t, func() bool { return len(got()) == 3 }, 2*time.Second, time.Millisecond)
			require.Equal(t, []uint64{1, 2, 3}, got())
			first, wasted := c.stats.copiesFirst.Load(), c.stats.copiesWasted.Load()
			require.LessOrEqual(t, first, uint64(3))
			require.Equal(t, copiesIn(name), first+wasted, "every copy is counted as first or wasted")
		})
	}
}

func copiesIn(name string) uint64 {
	if name == "only the stream" {
		return 0
	}
	return 3
}
