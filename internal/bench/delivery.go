package bench

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"
)

// drainTimeout bounds the wait for the deliveries of what was published.
const drainTimeout = 30 * time.Second

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
		CPUCores: c.server, LoadCPUCores: c.load, OtherCPUCores: c.other,
		Latency: percentiles(tr.latencies()), RSSMiB: float64(s1.rss) / (1 << 20),
	}
	if got > 0 {
		f.CPUPerDeliveryUs = float64(cpu.Microseconds()) / float64(got)
	}
	return f, nil
}
