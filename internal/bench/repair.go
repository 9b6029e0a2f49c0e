package bench

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quicpush/quicpush/client"
)

// repair measures how fast subscribers that were away catch up: Backlog
// messages are published to a channel, then Subscribers clients subscribe
// from seq 0 (as a client whose saved position is 0 does after a
// reconnect) and pull everything over repair streams.
func repair(ctx context.Context, cfg *Config, kind string) (Figures, error) {
	st := startStatus(cfg, kind)
	defer st.end()
	const channel = "room/repair"
	sys, srv, stop, err := startSystem(cfg, kind, channel)
	if err != nil {
		return Figures{}, err
	}
	defer stop()
	qs := sys.(quicpushSystem)

	if err := publishBacklog(ctx, cfg, qs, st); err != nil {
		return Figures{}, err
	}

	var connected atomic.Int64
	st.set(func() string { return fmt.Sprintf("connecting subscribers: %d/%d", connected.Load(), cfg.Subscribers) })
	clients := make([]*client.Client, cfg.Subscribers)
	closeAll, err := connectAll(ctx, cfg.Logger, cfg.Subscribers, func(ctx context.Context, i int) (func(), error) {
		c, err := qs.dial(ctx, "sub-"+strconv.Itoa(i))
		if err != nil {
			return nil, err
		}
		clients[i] = c
		return func() { c.Close() }, nil
	}, func(n int) { connected.Store(int64(n)) })
	if err != nil {
		return Figures{}, err
	}
	defer closeAll()

	stopProfile, err := profiler(cfg, kind, srv)
	if err != nil {
		return Figures{}, err
	}
	var got atomic.Int64
	want := int64(cfg.Backlog) * int64(cfg.Subscribers)
	s0, err := srv.sample()
	if err != nil {
		return Figures{}, err
	}
	st.set(func() string { return fmt.Sprintf("catching up: %d/%d", got.Load(), want) })
	var zero uint64
	for _, c := range clients {
		h := func(client.Message) error {
			got.Add(1)
			return nil
		}
		if _, err := c.Session("bench").Subscribe(ctx, channel, client.SubscribeOptions{Since: &zero}, h); err != nil {
			return Figures{}, fmt.Errorf("subscribing: %w", err)
		}
	}
	until := time.Now().Add(drainTimeout + time.Duration(want)*10*time.Microsecond)
	for got.Load() < want && time.Now().Before(until) && sleep(ctx, time.Millisecond) == nil {
	}
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
	if got.Load() < want {
		return Figures{}, fmt.Errorf("%d of %d messages repaired by %v", got.Load(), want, until.Format(time.TimeOnly))
	}
	wall, c := s1.at.Sub(s0.at), coresBetween(s0, s1)
	return Figures{
		Deliveries: got.Load(), CaughtUpSeconds: wall.Seconds(), RepairPerSec: perSec(got.Load(), wall),
		CPUPerRepairedUs: float64((s1.cpu - s0.cpu).Microseconds()) / float64(got.Load()),
		CPUCores:         c.server, LoadCPUCores: c.load, OtherCPUCores: c.other, RSSMiB: float64(s1.rss) / (1 << 20),
	}, nil
}

// publishBacklog publishes Backlog messages with Publishers in flight.
func publishBacklog(ctx context.Context, cfg *Config, qs quicpushSystem, st *status) error {
	publish, closePub, err := qs.publisher(ctx)
	if err != nil {
		return fmt.Errorf("connecting the publisher: %w", err)
	}
	defer closePub()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	ctx, cancelT := context.WithTimeout(ctx, publishGrace+time.Duration(cfg.Backlog)*time.Millisecond)
	defer cancelT()
	var (
		next, done atomic.Int64
		wg         sync.WaitGroup
	)
	st.set(func() string { return fmt.Sprintf("publishing the backlog: %d/%d", done.Load(), cfg.Backlog) })
	for range cfg.Publishers {
		wg.Go(func() {
			for idx := next.Add(1); idx <= int64(cfg.Backlog) && ctx.Err() == nil; idx = next.Add(1) {
				payload := make([]byte, cfg.Size)
				stamp(payload, uint64(idx), time.Now())
				if err := publish(ctx, uint64(idx), payload); err != nil {
					cancel(fmt.Errorf("publishing the backlog: %w", err))
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}
