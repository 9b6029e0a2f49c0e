package bench

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// TestMain doubles as the server child: the tests start this binary with
// "bench-server KIND".
func TestMain(m *testing.M) {
	if len(os.Args) == 3 && os.Args[1] == "bench-server" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		err := Serve(ctx, os.Args[2], os.Stdin, os.Stdout, log)
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// tiny is a scenario at a size CI can afford.
func tiny(t *testing.T, scenario string) Config {
	return Config{
		Scenario: scenario, Subscribers: 5, Messages: 50, Duration: 2 * time.Second, Warmup: 200 * time.Millisecond,
		Rate: map[string]float64{Latency: 200}[scenario], Backlog: 50, Baseline: true,
		ServerCommand: func(kind string) *exec.Cmd { return exec.Command(os.Args[0], "bench-server", kind) },
		Stderr:        t.Output(),
	}
}

func TestFanout(t *testing.T) {
	res, err := Run(t.Context(), tiny(t, Fanout))
	require.NoError(t, err)
	require.Equal(t, 5, res.Subscribers)
	require.Equal(t, 16, res.Window)
	for name, f := range map[string]*Figures{"quicpush": &res.Quicpush, "raw": res.Raw} {
		require.NotNil(t, f, name)
		require.EqualValues(t, 50, f.Published, name)
		require.EqualValues(t, 250, f.Deliveries, name)
		require.Zero(t, f.Lost, name)
		require.Positive(t, f.DeliveriesPerSec, name)
		require.GreaterOrEqual(t, f.CPUPerDeliveryUs, 0.0, name) // CPU time ticks every 10 ms
		require.Positive(t, f.RSSMiB, name)
		require.NotNil(t, f.Latency, name)
		require.Positive(t, f.Latency.P50, name)
		require.LessOrEqual(t, f.Latency.P50, f.Latency.P99, name)
		require.LessOrEqual(t, f.Latency.P99, f.Latency.Max, name)
	}
	require.InDelta(t, res.Quicpush.DeliveriesPerSec/res.Raw.DeliveriesPerSec, res.Ratio["deliveries_per_s"], 1e-9)
	require.Empty(t, res.Targets) // set for 1000 subscribers
}

func TestLatency(t *testing.T) {
	res, err := Run(t.Context(), tiny(t, Latency))
	require.NoError(t, err)
	require.Equal(t, 200.0, res.Rate)
	require.EqualValues(t, 50, res.Quicpush.Published)
	require.EqualValues(t, 250, res.Raw.Deliveries)
	require.Positive(t, res.Quicpush.Latency.P99)
	require.Positive(t, res.Ratio["latency_p99"])
	require.Empty(t, res.Targets) // set for 1000 subscribers x 50 msg/s
}

func TestTargets(t *testing.T) {
	fanout := Result{Scenario: Fanout, Subscribers: 1000, Quicpush: Figures{DeliveriesPerSec: 90}, Raw: &Figures{DeliveriesPerSec: 100}}
	fanout.Assess()
	require.Equal(t, []Target{{Name: "fan-out vs raw quic-go at 1000 subscribers", Want: ">= 0.8x", Value: 0.9, Met: true}}, fanout.Targets)

	latency := Result{Scenario: Latency, Subscribers: 1000, Rate: 50, Quicpush: Figures{Latency: &Percentiles{P99: 61}}}
	latency.Assess()
	require.Equal(t, []Target{{Name: "p99 publish -> deliver at 1000 subscribers x 50 msg/s", Want: "<= 50 ms", Value: 61}}, latency.Targets)
}

func TestIdle(t *testing.T) {
	res, err := Run(t.Context(), tiny(t, Idle))
	require.NoError(t, err)
	for name, f := range map[string]*Figures{"quicpush": &res.Quicpush, "raw": res.Raw} {
		require.Equal(t, 5, f.Conns, name)
		require.Positive(t, f.HeapPerConnKiB, name)
		require.Positive(t, f.GoroutinesPerConn, name)
		require.Positive(t, f.RSSMiB, name)
	}
	require.Contains(t, res.Ratio, "heap_per_conn_kib")
	require.InDelta(t, res.Quicpush.HeapPerConnKiB-res.Raw.HeapPerConnKiB, res.Overhead["heap_per_conn_kib"], 1e-9)
	require.Len(t, res.Targets, 1)
}

func TestStore(t *testing.T) {
	cfg := tiny(t, Store)
	cfg.ProfileDir = t.TempDir()
	res, err := Run(t.Context(), cfg)
	require.NoError(t, err)
	for name, f := range map[string]*Figures{"quicpush": &res.Quicpush, "raw": res.Raw} {
		require.NotNil(t, f, name)
		require.EqualValues(t, 50, f.Appended, name)
		require.Positive(t, f.AppendPerSec, name)
		require.GreaterOrEqual(t, f.CPUPerAppendUs, 0.0, name) // CPU time ticks every 10 ms
	}
	require.GreaterOrEqual(t, res.Quicpush.Read, int64(50)) // the warm-up's too
	require.Positive(t, res.Quicpush.RangePerSec)
	require.Zero(t, res.Raw.Read) // only quicpush's store can be read
	require.Contains(t, res.Ratio, "append_per_s")
	require.Len(t, res.Targets, 2)
	for _, kind := range []string{KindQuicpush, KindRaw} {
		require.FileExists(t, filepath.Join(cfg.ProfileDir, "store-"+kind+"-load.pprof"))
	}

	cfg.Baseline, cfg.ProfileDir = false, ""
	res, err = Run(t.Context(), cfg)
	require.NoError(t, err)
	require.Nil(t, res.Raw)
	require.EqualValues(t, 50, res.Quicpush.Appended)
	require.Len(t, res.Targets, 1)
}

func TestRepair(t *testing.T) {
	cfg := tiny(t, Repair)
	cfg.Subscribers = 2
	res, err := Run(t.Context(), cfg)
	require.NoError(t, err)
	require.Nil(t, res.Raw)
	require.EqualValues(t, 100, res.Quicpush.Deliveries)
	require.Positive(t, res.Quicpush.CaughtUpSeconds)
	require.Positive(t, res.Quicpush.RepairPerSec)
	require.Len(t, res.Targets, 1)
}

func TestTable(t *testing.T) {
	res := Result{Scenario: Idle, Subscribers: 10, Size: 100,
		Quicpush: Figures{Conns: 10, RSSPerConnKiB: 100, HeapPerConnKiB: 40, GoroutinesPerConn: 5},
		Raw:      &Figures{Conns: 10, RSSPerConnKiB: 56, HeapPerConnKiB: 34, GoroutinesPerConn: 4},
	}
	res.Assess()
	var b bytes.Buffer
	require.NoError(t, WriteTable(&b, []Result{res}))
	out := b.String()
	for _, want := range []string{"server RSS KiB/conn", "100.0", "56.0", "1.79x (+44.0)", "<= +30 KiB: MISSED"} {
		require.Contains(t, out, want)
	}
	require.Equal(t, 8, strings.Count(out, "\n")) // the header and seven figures
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []Config{
		{Scenario: "nope"},
		{Scenario: Fanout},              // no ServerCommand
		{Scenario: Store, Size: 8},      // too small for a timestamp
		{Scenario: Store, Rate: -1},     // negative
		{Scenario: Store, Window: -1},   // negative
		{Scenario: Store, Messages: -3}, // negative
	} {
		_, err := Run(context.Background(), cfg)
		require.Error(t, err, "%+v", cfg)
	}
}

func TestQuietest(t *testing.T) {
	run := func(subs int, other float64) Result {
		return Result{Scenario: Fanout, Subscribers: subs, Quicpush: Figures{OtherCPUCores: other}, Raw: &Figures{OtherCPUCores: other / 2}}
	}
	got := Quietest([]Result{run(10, 0.5), run(20, 0.1), run(10, 0.2), run(10, 0.3), run(20, 0.4)})
	require.Equal(t, []Result{run(10, 0.2), run(20, 0.1)}, got)
}

// A message still in flight keeps its slot: a late publisher's wait ends
// when its message arrives, however many messages came after it.
func TestTrackerSlots(t *testing.T) {
	tr := newTracker(2)
	done, err := tr.expect(1)
	require.NoError(t, err)
	_, err = tr.expect(1 + flightSlots)
	require.ErrorContains(t, err, "message 1 still in flight")

	tr = newTracker(2)
	done, err = tr.expect(1)
	require.NoError(t, err)
	payload := make([]byte, 16)
	stamp(payload, 1, time.Now())
	tr.deliver(0, payload)
	tr.deliver(1, payload)
	<-done
	_, err = tr.expect(1 + flightSlots)
	require.NoError(t, err)
}

// A run that waits in vain for a message says which subscribers lack it.
func TestTrackerNamesMissingSubscribers(t *testing.T) {
	tr := newTracker(8)
	payload := make([]byte, 16)
	for idx := uint64(1); idx <= 3; idx++ {
		stamp(payload, idx, time.Now())
		for i := range 8 {
			if idx == 3 && (i == 2 || i == 5) {
				continue // subscribers 2 and 5 never get message 3
			}
			tr.deliver(i, payload)
		}
	}
	require.Equal(t, "2 (last got 2), 5 (last got 2)", tr.missing(3))
	require.Empty(t, tr.missing(2))
}
