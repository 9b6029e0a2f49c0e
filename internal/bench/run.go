package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"time"
)

// Run runs cfg's scenario once, with the raw baseline too when
// cfg.Baseline is set, and returns the result.
func Run(ctx context.Context, cfg Config) (Result, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return Result{}, err
	}
	res := Result{Scenario: cfg.Scenario, Size: cfg.Size}
	switch cfg.Scenario {
	case Fanout, Latency, Store:
		measure := delivery
		if cfg.Scenario == Store {
			measure = storeBench
			res.Publishers, res.Batch = cfg.Publishers, cfg.Batch
		} else {
			res.Subscribers, res.Rate = cfg.Subscribers, cfg.Rate
			if cfg.Rate == 0 {
				res.Window = cfg.Window
			} else {
				res.Publishers = cfg.Publishers
			}
		}
		kinds := []string{KindQuicpush}
		if cfg.Baseline {
			kinds = append(kinds, KindRaw)
		}
		figs, err := measure(ctx, &cfg, kinds...)
		if err != nil {
			return res, fmt.Errorf("%s: %w", cfg.Scenario, err)
		}
		res.Quicpush = figs[0]
		if cfg.Baseline {
			res.Raw = &figs[1]
		}
	case Idle:
		res.Subscribers = cfg.Subscribers
		if err := runEach(ctx, &cfg, &res, idle, cfg.Baseline); err != nil {
			return res, err
		}
	case Repair:
		res.Subscribers, res.Backlog, res.Publishers = cfg.Subscribers, cfg.Backlog, cfg.Publishers
		if err := runEach(ctx, &cfg, &res, repair, false); err != nil {
			return res, err
		}
	}
	res.Assess()
	return res, nil
}

// runEach measures quicpush, then the raw baseline if asked, one after
// the other.
func runEach(ctx context.Context, cfg *Config, res *Result, measure func(context.Context, *Config, string) (Figures, error), baseline bool) error {
	var err error
	if res.Quicpush, err = measure(ctx, cfg, KindQuicpush); err != nil {
		return fmt.Errorf("%s (quicpush): %w", cfg.Scenario, err)
	}
	if baseline {
		raw, err := measure(ctx, cfg, KindRaw)
		if err != nil {
			return fmt.Errorf("%s (raw quic-go): %w", cfg.Scenario, err)
		}
		res.Raw = &raw
	}
	return nil
}

// status tells cfg.Progress what a run is doing, every 250 ms.
type status struct {
	report func(string)
	prefix string
	stop   chan struct{}
	done   chan struct{}

	mu   sync.Mutex
	line func() string
}

func startStatus(cfg *Config, kind string) *status {
	s := &status{
		report: cfg.Progress,
		prefix: fmt.Sprintf("[%s %s] ", cfg.Scenario, kind),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
		line:   func() string { return "starting" },
	}
	go func() {
		defer close(s.done)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
				s.show()
			}
		}
	}()
	return s
}

// set starts a phase whose status line is line().
func (s *status) set(line func() string) {
	s.mu.Lock()
	s.line = line
	s.mu.Unlock()
	s.show()
}

func (s *status) show() {
	s.mu.Lock()
	line := s.line
	s.mu.Unlock()
	s.report(s.prefix + line())
}

func (s *status) end() {
	close(s.stop)
	<-s.done
}

// profiler records CPU profiles over the measuring time when
// cfg.ProfileDir is set: this process's (the load clients') as
// SCENARIO-KIND-N-load.pprof, or store-KIND-load.pprof for the store scenario,
// and the server child's, if any, as SCENARIO-KIND-N.pprof.
func profiler(cfg *Config, kind string, srv *serverProc) (stop func() error, err error) {
	if cfg.ProfileDir == "" {
		return func() error { return nil }, nil
	}
	name := fmt.Sprintf("%s-%s-%d", cfg.Scenario, kind, cfg.Subscribers)
	if cfg.Scenario == Store {
		name = "store-" + kind
	}
	base := filepath.Join(cfg.ProfileDir, name)
	if base, err = filepath.Abs(base); err != nil {
		return nil, err
	}
	load, err := os.Create(base + "-load.pprof")
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(load); err != nil {
		load.Close()
		return nil, err
	}
	stopLoad := func() error {
		pprof.StopCPUProfile()
		return load.Close()
	}
	if srv == nil {
		return stopLoad, nil
	}
	if _, err := srv.call("profile " + base + ".pprof"); err != nil {
		stopLoad()
		return nil, err
	}
	return func() error {
		_, err := srv.call("profile-stop")
		return errors.Join(err, stopLoad())
	}, nil
}

func perSec(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}
