package chaos

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/certs"
	"github.com/quicpush/quicpush/client"
	"github.com/quicpush/quicpush/internal/netem"
)

var (
	criticalBench  = flag.Bool("chaos.critical", false, "measure critical-message latency, bytes and server CPU with redundancy off and on (about 5 minutes)")
	criticalLosses = flag.String("chaos.critical.loss", "0,2,5,10", "with -chaos.critical: the loss percentages to measure (to run a disturbed row again)")
	criticalRate   = flag.Int("chaos.critical.rate", 20, "critical messages per second")
	criticalFor    = flag.Duration("chaos.critical.duration", 10*time.Second, "with -chaos.critical: how long each cell publishes")
)

// TestCriticalRedundancy measures, through the lossy relay (50 ms RTT),
// critical messages to 200 subscribers with redundant copies off and on,
// at 0, 2, 5 and 10% loss, with droppable chat alongside: publish ->
// deliver latency, the bytes the server sent and its CPU time per
// delivery. It prints a table; it asserts only that every critical
// message reached every subscriber once, in order. In the short form (CI)
// it runs one small cell.
func TestCriticalRedundancy(t *testing.T) {
	losses, subscribers, perCell := []float64{5}, 20, 3*time.Second
	if *criticalBench {
		losses, subscribers, perCell = nil, 200, *criticalFor
		for _, f := range strings.Split(*criticalLosses, ",") {
			loss, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
			require.NoError(t, err, "-chaos.critical.loss")
			losses = append(losses, loss)
		}
	}
	var rows []string
	for _, loss := range losses {
		var r [2]criticalResult // off, on
		for i, on := range []bool{false, true} {
			r[i] = runCritical(t, loss, on, subscribers, perCell)
			t.Logf("loss %v%%, copies %v: %d deliveries in %.1f s, p50 %.0f ms, p99 %.0f ms, max %.0f ms, %.0f bytes/delivery (copies %.0f), server CPU %.0f µs/delivery, copies first/received %d/%d; cores used by the clients and relay %.2f, by other processes %.2f, load average %s",
				loss, map[bool]string{false: "off", true: "on"}[on], r[i].deliveries, r[i].phase.Seconds(), r[i].p50, r[i].p99, r[i].max,
				r[i].bytesPerDelivery, r[i].copyBytesPerDelivery, r[i].cpuPerDelivery, r[i].copiesFirst, r[i].copiesFirst+r[i].copiesWasted, r[i].ownCores, r[i].otherCores, r[i].loadAvg)
		}
		off, on := r[0], r[1]
		rows = append(rows, fmt.Sprintf("| %v%% | %.0f / %.0f | %.0f / %.0f | %.0f / %.0f | %.0f / %.0f | %.0f / %.0f | %.2f / %.2f |",
			loss, off.p50, on.p50, off.p99, on.p99, off.max, on.max, off.bytesPerDelivery, on.bytesPerDelivery,
			off.cpuPerDelivery, on.cpuPerDelivery, off.otherCores, on.otherCores))
	}
	t.Logf("\n%d subscribers, %v of publishing per cell; each pair is copies off / on\n"+
		"| loss | p50 ms | p99 ms | max ms | bytes/delivery | server CPU µs/delivery | other processes (cores) |\n|---|---|---|---|---|---|---|\n%s",
		subscribers, perCell, strings.Join(rows, "\n"))
}

type criticalResult struct {
	deliveries                int
	phase                     time.Duration // from the first publish to the last delivery
	p50, p99, max             float64       // ms
	bytesPerDelivery          float64       // every byte the server sent in the phase
	copyBytesPerDelivery      float64       // of which redundant copies
	cpuPerDelivery            float64       // µs of the server process in the phase
	copiesFirst, copiesWasted uint64
	ownCores, otherCores      float64 // CPU of this process (clients, relay) and of other processes on the machine in the phase
	loadAvg                   string
}

// runCritical publishes -chaos.critical.rate critical messages/s (20)
// for duration, with 40
// droppable chat messages/s alongside, to subscribers behind the relay,
// and measures from the first publish until every subscriber has every
// critical message.
func runCritical(t *testing.T, loss float64, copies bool, subscribers int, duration time.Duration) criticalResult {
	srv := startCriticalServer(t, copies)
	defer srv.stop() // the last: after the clients have gone
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	link := netem.Link{Loss: loss / 100, Delay: 25 * time.Millisecond}
	relay, err := netem.Start(context.Background(), netem.Config{Upstream: srv.ready.Addr, Uplink: link, Downlink: link, Seed: int64(loss) + 7, Logger: quiet})
	require.NoError(t, err)
	defer relay.Close()

	pool, err := certs.CAPool(srv.ready.CA)
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
	got := make([][]uint64, subscribers) // per subscriber: the reliable seqs handed over, in order
	delivered := 0
	subs := make([]*client.Client, subscribers)
	defer func() {
		for _, c := range subs {
			if c != nil {
				c.Close()
			}
		}
	}()
	subscribe := func(i int) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := client.Dial(ctx, relay.Addr().String(), client.Config{TLSConfig: &tls.Config{RootCAs: pool}, Logger: quiet})
		if err != nil {
			return err
		}
		subs[i] = c
		_, err = c.Session("s").Subscribe(ctx, "room/live", client.SubscribeOptions{}, func(m client.Message) error {
			if m.Droppable {
				return nil // chat; every reliable message here is critical (a repaired one does not say so)
			}
			mu.Lock()
			defer mu.Unlock()
			got[i] = append(got[i], m.Seq)
			delivered++
			latencies = append(latencies, time.Since(time.Unix(0, int64(binary.BigEndian.Uint64(m.Data)))))
			return nil
		})
		return err
	}
	// A few at a time: one by one, 200 handshakes through the 50 ms RTT
	// take most of a cell's time.
	errs := make([]error, subscribers)
	var wg sync.WaitGroup
	slots := make(chan struct{}, 8)
	for i := range subscribers {
		wg.Go(func() {
			slots <- struct{}{}
			defer func() { <-slots }()
			errs[i] = subscribe(i)
		})
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "subscriber %d", i)
	}
	teacherConn, chatConn := dial(srv.ready.Addr), dial(srv.ready.Addr)
	defer teacherConn.Close()
	defer chatConn.Close()
	teacher, chat := teacherConn.Session("teacher"), chatConn.Session("chat")

	load0, stats0 := sampleLoad(t), srv.stats(t)
	// The chat goes on beside the teacher: its publishes do not hold the
	// teacher's pace up.
	chatCtx, stopChat := context.WithCancel(context.Background())
	defer stopChat() // if the teacher fails
	chatDone := make(chan struct{})
	go func() {
		defer close(chatDone)
		tick := time.NewTicker(25 * time.Millisecond)
		defer tick.Stop()
		for stop := time.Now().Add(duration); time.Now().Before(stop) && chatCtx.Err() == nil; <-tick.C {
			chat.Publish(chatCtx, "room/live", []byte("clap"), client.PublishOptions{Droppable: true}) // droppable: taken or not
		}
	}()
	var published []uint64
	tick := time.NewTicker(time.Second / time.Duration(max(*criticalRate, 1)))
	defer tick.Stop()
	for stop := time.Now().Add(duration); time.Now().Before(stop); <-tick.C {
		data := binary.BigEndian.AppendUint64(nil, uint64(time.Now().UnixNano()))
		res, err := teacher.Publish(context.Background(), "room/live", data, client.PublishOptions{Critical: true})
		require.NoError(t, err)
		published = append(published, res.Seq)
	}
	<-chatDone
	want := len(published) * subscribers
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return delivered
	}
	// Not waitFor: on timeout the checks below say what is missing.
	for deadline := time.Now().Add(2 * time.Minute); count() < want && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	stats1, load1 := srv.stats(t), sampleLoad(t)

	mu.Lock()
	defer mu.Unlock()
	for i, seqs := range got {
		require.Equal(t, published, seqs, "subscriber %d: every critical message once, in order", i)
	}
	slices.Sort(latencies)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	serverCPU := stats1.CPU - stats0.CPU
	r := criticalResult{
		deliveries: want, phase: load1.at.Sub(load0.at),
		p50: ms(latencies[len(latencies)/2]), p99: ms(latencies[len(latencies)*99/100]), max: ms(latencies[len(latencies)-1]),
		bytesPerDelivery:     float64(stats1.BytesSent-stats0.BytesSent) / float64(want),
		copyBytesPerDelivery: float64(stats1.CopyBytes-stats0.CopyBytes) / float64(want),
		cpuPerDelivery:       float64(serverCPU.Microseconds()) / float64(want),
		ownCores:             (load1.own - load0.own).Seconds() / load1.at.Sub(load0.at).Seconds(),
		otherCores:           othersCores(load0, load1, serverCPU),
		loadAvg:              loadAverage(t),
	}
	for _, c := range subs {
		st := c.Stats()
		r.copiesFirst += st.CopiesFirst
		r.copiesWasted += st.CopiesWasted
	}
	return r
}
