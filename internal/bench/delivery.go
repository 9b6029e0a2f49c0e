package bench

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// drainTimeout bounds the wait for the deliveries of what was published.
const drainTimeout = 30 * time.Second

// sliceOrder is the order in which delivery measures two servers: ABBA,
// so that work elsewhere on the machine that grows or fades during a run
// weighs on both alike.
var sliceOrder = []int{0, 1, 1, 0}

// slicesOf is the order in which n sides are measured: sliceOrder for two,
// the one slice of a side alone.
func slicesOf(n int) []int {
	if n > 1 {
		return sliceOrder
	}
	return []int{0}
}

// openSides opens a side per kind, in order. closeAll closes them; on an
// error, the ones already opened are closed.
func openSides[S interface{ close() }](kinds []string, open func(kind string) (S, error)) (sides []S, closeAll func(), err error) {
	closeAll = func() {
		for _, s := range sides {
			s.close()
		}
	}
	for _, kind := range kinds {
		s, err := open(kind)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		sides = append(sides, s)
	}
	return sides, closeAll, nil
}

// delivery measures fanout and latency for each kind of server: Subscribers
// on one channel, one publisher, numbered messages carrying their send
// time. Both servers and their clients are set up first; then each is
// measured in turn, in slices (sliceOrder), while the other stays idle.
func delivery(ctx context.Context, cfg *Config, kinds ...string) ([]Figures, error) {
	st := startStatus(cfg, strings.Join(kinds, "+"))
	defer st.end()
	sides, closeAll, err := openSides(kinds, func(kind string) (*side, error) { return openSide(ctx, cfg, kind, st) })
	if err != nil {
		return nil, err
	}
	defer closeAll()
	order := slicesOf(len(kinds))
	slice := cfg.Duration * time.Duration(len(kinds)) / time.Duration(len(order))
	for n, i := range order {
		first := n == slices.Index(order, i)
		if err := sides[i].measure(ctx, cfg, st, slice, first); err != nil {
			return nil, fmt.Errorf("%s: %w", sides[i].kind, err)
		}
	}
	figs := make([]Figures, len(sides))
	for i, s := range sides {
		figs[i] = s.figures()
	}
	return figs, nil
}

// side is one server under load: its child process, its subscribers and
// publisher, and what its measured slices added up to.
type side struct {
	kind    string
	srv     *serverProc
	tr      *tracker
	pub     *loadPublisher
	closers []func() // run last first

	published, remaining int64
	wall                 time.Duration
	serverCPU, loadCPU   time.Duration
	datagrams            int64   // sent on the machine while measuring
	other                float64 // CPU seconds of other processes
	rss                  int64
}

// openSide starts a server child of kind, connects its subscribers and
// publisher, and warms it up.
func openSide(ctx context.Context, cfg *Config, kind string, st *status) (*side, error) {
	sys, srv, stop, err := startSystem(cfg, kind, "room/bench")
	if err != nil {
		return nil, err
	}
	s := &side{kind: kind, srv: srv, tr: newTracker(cfg.Subscribers), closers: []func(){stop}}
	s.remaining = math.MaxInt64
	if cfg.Messages > 0 {
		s.remaining = int64(cfg.Messages)
	}
	var connected atomic.Int64
	st.set(func() string {
		return fmt.Sprintf("%s: connecting subscribers: %d/%d", kind, connected.Load(), cfg.Subscribers)
	})
	closeSubs, err := connectAll(ctx, cfg.Logger, cfg.Subscribers, func(ctx context.Context, i int) (func(), error) {
		return sys.subscribe(ctx, i, func(p []byte) { s.tr.deliver(i, p) })
	}, func(n int) { connected.Store(int64(n)) })
	if err != nil {
		s.close()
		return nil, err
	}
	s.closers = append(s.closers, closeSubs)
	publish, closePub, err := sys.publisher(ctx)
	if err != nil {
		s.close()
		return nil, fmt.Errorf("connecting the publisher: %w", err)
	}
	s.closers = append(s.closers, closePub)
	s.pub = &loadPublisher{cfg: cfg, publish: publish, tr: s.tr}

	if cfg.Warmup > 0 {
		st.set(func() string { return fmt.Sprintf("%s: warming up: %d deliveries", kind, s.tr.deliveries.Load()) })
		n, err := s.pub.run(ctx, time.Now().Add(cfg.Warmup), 0)
		if err != nil {
			s.close()
			return nil, fmt.Errorf("warming up: %w", err)
		}
		// The warm-up's deliveries end before the measuring starts.
		want, until := n*int64(cfg.Subscribers), time.Now().Add(drainTimeout)
		for s.tr.deliveries.Load() < want && time.Now().Before(until) && sleep(ctx, 2*time.Millisecond) == nil {
		}
	}
	s.tr.from.Store(s.pub.next.Load() + 1)
	return s, nil
}

func (s *side) close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
}

// measure publishes for d (or the rest of Messages) and waits for the
// deliveries, adding it all up. The first slice of a side is profiled.
func (s *side) measure(ctx context.Context, cfg *Config, st *status, d time.Duration, profile bool) error {
	if s.remaining <= 0 {
		return nil
	}
	stopProfile := func() error { return nil }
	if profile {
		var err error
		if stopProfile, err = profiler(cfg, s.kind, s.srv); err != nil {
			return err
		}
	}
	s0, err := s.srv.sample()
	if err != nil {
		return err
	}
	before := s.tr.measured.Load()
	st.set(func() string {
		d := time.Since(s0.at)
		n := s.tr.measured.Load() - before
		return fmt.Sprintf("%s: measuring: %.0fs, %d deliveries (%.0f/s)", s.kind, d.Seconds(), n, perSec(n, d))
	})
	n, err := s.pub.run(ctx, s0.at.Add(d), int(min(s.remaining, math.MaxInt32)))
	if err != nil {
		return err
	}
	s.published += n
	s.remaining -= n
	s.tr.waitMeasured(ctx, s.published*int64(cfg.Subscribers), time.Now().Add(drainTimeout))
	s1, err := s.srv.sample()
	if err != nil {
		return err
	}
	if err := stopProfile(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	wall := s1.at.Sub(s0.at)
	s.wall += wall
	s.serverCPU += s1.cpu - s0.cpu
	s.loadCPU += s1.load - s0.load
	s.other += coresBetween(s0, s1).other * wall.Seconds()
	s.datagrams += s1.udp - s0.udp
	s.rss = s1.rss
	return nil
}

func (s *side) figures() Figures {
	got := s.tr.measured.Load()
	secs := s.wall.Seconds()
	f := Figures{
		Published: s.published, Deliveries: got, Lost: s.published*int64(s.tr.n) - got,
		Seconds: secs, DeliveriesPerSec: perSec(got, s.wall),
		CPUCores: s.serverCPU.Seconds() / secs, LoadCPUCores: s.loadCPU.Seconds() / secs, OtherCPUCores: s.other / secs,
		Latency: percentiles(s.tr.latencies()), RSSMiB: float64(s.rss) / (1 << 20),
	}
	if got > 0 {
		f.CPUPerDeliveryUs = float64(s.serverCPU.Microseconds()) / float64(got)
		f.DatagramsPerDelivery = float64(s.datagrams) / float64(got)
	}
	return f
}
