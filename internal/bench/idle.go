package bench

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
)

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
	// Both RSS figures start from a server whose free memory went back to
	// the OS, so that neither counts the start-up's.
	if _, err := srv.call("release"); err != nil {
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
	stopProfile, err := profiler(cfg, kind, srv) // the connects' CPU
	if err != nil {
		return Figures{}, err
	}
	var connected atomic.Int64
	st.set(func() string { return fmt.Sprintf("connecting: %d/%d", connected.Load(), cfg.Subscribers) })
	closeAll, err := connectAll(ctx, cfg.Logger, cfg.Subscribers, func(ctx context.Context, i int) (func(), error) {
		return sys.subscribe(ctx, i, func([]byte) {})
	}, func(n int) { connected.Store(int64(n)) })
	if err := errors.Join(err, stopProfile()); err != nil {
		if closeAll != nil {
			closeAll()
		}
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
	if _, err := srv.call("release"); err != nil {
		return Figures{}, err
	}
	s3, err := srv.sample()
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
		Conns:                 cfg.Subscribers,
		RSSPerConnKiB:         float64(s2.rss-s0.rss) / 1024 / n,
		RSSReleasedPerConnKiB: float64(s3.rss-s0.rss) / 1024 / n,
		HeapPerConnKiB:        (float64(h1.HeapBytes) - float64(h0.HeapBytes)) / 1024 / n,
		HeapSpansPerConnKiB:   (float64(h1.HeapSpanBytes) - float64(h0.HeapSpanBytes)) / 1024 / n,
		StackPerConnKiB:       (float64(h1.StackBytes) - float64(h0.StackBytes)) / 1024 / n,
		GoroutinesPerConn:     float64(h1.Goroutines-h0.Goroutines) / n,
		CPUPerConnectMs:       float64((s1.cpu - s0.cpu).Microseconds()) / 1000 / n,
		RSSMiB:                float64(s2.rss) / (1 << 20),
	}, nil
}
