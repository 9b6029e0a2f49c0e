package chaos

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/certs"
	"github.com/quicpush/quicpush/client"
	"github.com/quicpush/quicpush/internal/netem"
	qpserver "github.com/quicpush/quicpush/server"
	"github.com/quicpush/quicpush/store/memstore"
)

var criticalBench = flag.Bool("chaos.critical", false, "measure critical-message latency with redundancy off and on (about 2 minutes)")

// TestCriticalRedundancy measures, through the lossy relay (50 ms RTT),
// the publish -> deliver latency of critical messages for 200 subscribers
// with redundant copies off and on, at 0, 2, 5 and 10% loss, with droppable
// chat alongside. It prints a table; it asserts only exactly-once delivery.
// In the short form (CI) it runs one small cell.
func TestCriticalRedundancy(t *testing.T) {
	losses, subscribers, perCell := []float64{5}, 20, 3*time.Second
	if *criticalBench {
		losses, subscribers, perCell = []float64{0, 2, 5, 10}, 200, 10*time.Second
	}
	var rows []string
	for _, loss := range losses {
		var p99off float64
		for _, on := range []bool{false, true} {
			r := runCritical(t, loss, on, subscribers, perCell)
			if !on {
				p99off = r.p99
			}
			rows = append(rows, fmt.Sprintf("| %v%% | %v | %d | %.0f | %.0f | %.0f | %.2f | %d/%d |",
				loss, map[bool]string{false: "off", true: "on"}[on], r.samples, r.p50, r.p99, r.max, r.copyBytesPerDelivery, r.copiesFirst, r.copiesFirst+r.copiesWasted))
			if on && p99off > 0 {
				t.Logf("loss %v%%: p99 %.0f ms with copies vs %.0f ms without", loss, r.p99, p99off)
			}
		}
	}
	t.Log("\n| loss | copies | samples | p50 ms | p99 ms | max ms | copy bytes/delivery | copies first/received |\n|---|---|---|---|---|---|---|---|\n" + strings.Join(rows, "\n"))
}

type criticalResult struct {
	samples                   int
	p50, p99, max             float64
	copyBytesPerDelivery      float64
	copiesFirst, copiesWasted uint64
}

func runCritical(t *testing.T, loss float64, copies bool, subscribers int, duration time.Duration) criticalResult {
	dir := t.TempDir()
	dev, err := certs.EnsureDev(dir, nil)
	require.NoError(t, err)
	rl, err := certs.Load(dev.Cert, dev.Key)
	require.NoError(t, err)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := qpserver.Config{Store: memstore.New(memstore.Options{}), TLSConfig: &tls.Config{GetCertificate: rl.GetCertificate}, Logger: quiet,
		PublishRate: -1, ChannelLimits: []qpserver.ChannelLimit{{Pattern: "room/*", DroppableRate: -1}}}
	cfg.Critical = qpserver.CriticalConfig{Always: true, BudgetBytes: 64 << 10}
	if !copies {
		cfg.Critical.BudgetBytes = -1
	}
	srv, err := qpserver.New(cfg)
	require.NoError(t, err)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	addr, err := srv.Listen(pc)
	require.NoError(t, err)
	defer func() { srv.Close(); pc.Close() }()

	link := netem.Link{Loss: loss / 100, Delay: 25 * time.Millisecond}
	relay, err := netem.Start(context.Background(), netem.Config{Upstream: addr.String(), Uplink: link, Downlink: link, Seed: int64(loss) + 7, Logger: quiet})
	require.NoError(t, err)
	defer relay.Close()

	pool, err := certs.CAPool(dev.CA)
	require.NoError(t, err)
	dial := func(to string) *client.Client {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := client.Dial(ctx, to, client.Config{TLSConfig: &tls.Config{RootCAs: pool}, Logger: quiet})
		require.NoError(t, err)
		return c
	}
	var mu sync.Mutex
	var latencies []time.Duration
	seen := map[[2]uint64]int{} // (subscriber, seq) -> times handed over
	var subs []*client.Client
	for i := 0; i < subscribers; i++ {
		c := dial(relay.Addr().String())
		subs = append(subs, c)
		id := uint64(i)
		_, err := c.Session("s").Subscribe(context.Background(), "room/live", client.SubscribeOptions{}, func(m client.Message) error {
			if m.Droppable {
				return nil // chat; every reliable message here is critical (a repaired one does not say so)
			}
			mu.Lock()
			defer mu.Unlock()
			seen[[2]uint64{id, m.Seq}]++
			latencies = append(latencies, time.Since(time.Unix(0, int64(binary.BigEndian.Uint64(m.Data)))))
			return nil
		})
		require.NoError(t, err)
	}
	defer func() {
		for _, c := range subs {
			c.Close()
		}
	}()
	teacher := dial(addr.String()).Session("teacher")
	chat := dial(addr.String()).Session("chat")
	stop := time.Now().Add(duration)
	published := 0
	for tick := time.NewTicker(50 * time.Millisecond); time.Now().Before(stop); <-tick.C {
		data := binary.BigEndian.AppendUint64(nil, uint64(time.Now().UnixNano()))
		_, err := teacher.Publish(context.Background(), "room/live", data, client.PublishOptions{Critical: true})
		require.NoError(t, err)
		published++
		for i := 0; i < 2; i++ { // chat alongside
			chat.Publish(context.Background(), "room/live", []byte("clap"), client.PublishOptions{Droppable: true})
		}
	}
	want := published * subscribers
	deadline := time.Now().Add(2 * time.Minute)
	for {
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		if n >= want || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, want, len(seen), "every critical message to every subscriber")
	for k, n := range seen {
		require.Equal(t, 1, n, "subscriber %d seq %d handed over %d times", k[0], k[1], n)
	}
	slices.Sort(latencies)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	r := criticalResult{samples: len(latencies), p50: ms(latencies[len(latencies)/2]), p99: ms(latencies[len(latencies)*99/100]), max: ms(latencies[len(latencies)-1])}
	r.copyBytesPerDelivery = float64(srv.Stats().CopyBytes) / float64(want)
	for _, c := range subs {
		st := c.Stats()
		r.copiesFirst += st.CopiesFirst
		r.copiesWasted += st.CopiesWasted
	}
	return r
}
