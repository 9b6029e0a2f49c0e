package bench

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// drainTimeout bounds the wait for the deliveries of what was published.
const drainTimeout = 30 * time.Second

// startSystem starts a server child of kind and its load clients' view of
// it; stop ends the child.
func startSystem(cfg *Config, kind, channel string) (sys system, srv *serverProc, stop func(), err error) {
	srv, err = startServer(cfg, kind)
	if err != nil {
		return nil, nil, nil, err
	}
	stop = func() {
		if err := srv.close(); err != nil {
			cfg.Logger.Warn("server child", "kind", kind, "err", err)
		}
	}
	if sys, err = newSystem(cfg, srv, channel); err != nil {
		stop()
		return nil, nil, nil, err
	}
	return sys, srv, stop, nil
}

// delivery measures fanout and latency: Subscribers on one channel, one
// publisher, numbered messages carrying their send time.
func delivery(ctx context.Context, cfg *Config, kind string) (Figures, error) {
	st := startStatus(cfg, kind)
	defer st.end()
	sys, srv, stop, err := startSystem(cfg, kind, "room/bench")
	if err != nil {
		return Figures{}, err
	}
	defer stop()

	tr := newTracker(cfg.Subscribers, cfg.Window)
	var connected atomic.Int64
	st.set(func() string { return fmt.Sprintf("connecting subscribers: %d/%d", connected.Load(), cfg.Subscribers) })
	closeSubs, err := connectAll(ctx, cfg.Subscribers, func(ctx context.Context, i int) (func(), error) {
		return sys.subscribe(ctx, i, func(p []byte) { tr.deliver(i, p) })
	}, func(n int) { connected.Store(int64(n)) })
	if err != nil {
		return Figures{}, err
	}
	defer closeSubs()
	publish, closePub, err := sys.publisher(ctx)
	if err != nil {
		return Figures{}, fmt.Errorf("connecting the publisher: %w", err)
	}
	defer closePub()
	pub := &loadPublisher{cfg: cfg, publish: publish, tr: tr}

	if cfg.Warmup > 0 {
		st.set(func() string { return fmt.Sprintf("warming up: %d deliveries", tr.deliveries.Load()) })
		n, err := pub.run(ctx, time.Now().Add(cfg.Warmup), 0)
		if err != nil {
			return Figures{}, fmt.Errorf("warming up: %w", err)
		}
		// The warm-up's deliveries end before the measuring starts.
		want, until := n*int64(cfg.Subscribers), time.Now().Add(drainTimeout)
		for tr.deliveries.Load() < want && time.Now().Before(until) && sleep(ctx, 2*time.Millisecond) == nil {
		}
	}

	tr.from.Store(pub.next.Load() + 1)
	stopProfile, err := profiler(cfg, kind, srv)
	if err != nil {
		return Figures{}, err
	}
	s0, err := srv.sample()
	if err != nil {
		return Figures{}, err
	}
	st.set(func() string {
		d := time.Since(s0.at)
		n := tr.measured.Load()
		return fmt.Sprintf("measuring: %.0fs, %d deliveries (%.0f/s)", d.Seconds(), n, perSec(n, d))
	})
	published, err := pub.run(ctx, s0.at.Add(cfg.Duration), cfg.Messages)
	if err != nil {
		return Figures{}, err
	}
	want := published * int64(cfg.Subscribers)
	tr.waitMeasured(ctx, want, time.Now().Add(drainTimeout))
	s1, err := srv.sample()
	if err != nil {
		return Figures{}, err
	}
	if err := stopProfile(); err != nil {
		return Figures{}, err
	}
	if err := ctx.Err(); err != nil {
		return Figures{}, err
	}
	wall, cpu := s1.at.Sub(s0.at), s1.cpu-s0.cpu
	got := tr.measured.Load()
	c := coresBetween(s0, s1)
	f := Figures{
		Published: published, Deliveries: got, Lost: want - got,
		Seconds: wall.Seconds(), DeliveriesPerSec: perSec(got, wall),
		CPUCores: c.server, LoadCPUCores: c.load, BusyCPUCores: c.busy,
		Latency: percentiles(tr.latencies()), RSSMiB: float64(s1.rss) / (1 << 20),
	}
	if got > 0 {
		f.CPUPerDeliveryUs = float64(cpu.Microseconds()) / float64(got)
	}
	return f, nil
}

// idle measures what Subscribers idle connections cost the server: each
// subscribed to one channel and doing nothing else (raw: one open stream).
func idle(ctx context.Context, cfg *Config, kind string) (Figures, error) {
	st := startStatus(cfg, kind)
	defer st.end()
	sys, srv, stop, err := startSystem(cfg, kind, "room/idle")
	if err != nil {
		return Figures{}, err
	}
	defer stop()
	settle := func() error {
		st.set(func() string { return "settling" })
		return sleep(ctx, cfg.Warmup)
	}
	if err := settle(); err != nil {
		return Figures{}, err
	}
	s0, err := srv.sample()
	if err != nil {
		return Figures{}, err
	}
	h0, err := srv.call("stats")
	if err != nil {
		return Figures{}, err
	}
	var connected atomic.Int64
	st.set(func() string { return fmt.Sprintf("connecting: %d/%d", connected.Load(), cfg.Subscribers) })
	closeAll, err := connectAll(ctx, cfg.Subscribers, func(ctx context.Context, i int) (func(), error) {
		return sys.subscribe(ctx, i, func([]byte) {})
	}, func(n int) { connected.Store(int64(n)) })
	if err != nil {
		return Figures{}, err
	}
	defer closeAll()
	s1, err := srv.sample()
	if err != nil {
		return Figures{}, err
	}
	// Handshake garbage is collected and every connection has gone quiet.
	if err := settle(); err != nil {
		return Figures{}, err
	}
	s2, err := srv.sample()
	if err != nil {
		return Figures{}, err
	}
	h1, err := srv.call("stats")
	if err != nil {
		return Figures{}, err
	}
	if cfg.ProfileDir != "" {
		base, err := filepath.Abs(filepath.Join(cfg.ProfileDir, fmt.Sprintf("idle-%s-%d", kind, cfg.Subscribers)))
		if err == nil {
			_, err = srv.call("snapshot " + base)
		}
		if err != nil {
			return Figures{}, err
		}
	}
	n := float64(cfg.Subscribers)
	return Figures{
		Conns:             cfg.Subscribers,
		RSSPerConnKiB:     float64(s2.rss-s0.rss) / 1024 / n,
		HeapPerConnKiB:    (float64(h1.HeapBytes) - float64(h0.HeapBytes)) / 1024 / n,
		StackPerConnKiB:   (float64(h1.StackBytes) - float64(h0.StackBytes)) / 1024 / n,
		GoroutinesPerConn: float64(h1.Goroutines-h0.Goroutines) / n,
		CPUPerConnectMs:   float64((s1.cpu - s0.cpu).Microseconds()) / 1000 / n,
		RSSMiB:            float64(s2.rss) / (1 << 20),
	}, nil
}

// pushSize is the size of the push frame the quicpush server sends for a
// message of size bytes on channel, so that the raw baseline sends as many
// bytes per delivery.
func pushSize(channel string, size int) int {
	return proto.Size(&pb.Frame{Body: &pb.Frame_Push{Push: &pb.Push{
		Channel: channel, Epoch: math.MaxUint64 / 3, Seq: 100000, Data: make([]byte, size),
		TimeUnixNs: time.Now().UnixNano(), From: "publisher", Id: msgID(100000),
	}}})
}
