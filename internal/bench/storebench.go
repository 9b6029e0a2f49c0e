package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quicpush/quicpush/store"
)

// storeChannels is how many channels the store scenario appends to.
const storeChannels = 16

// storeBench appends durably (Badger, fsync per group commit) from
// Publishers goroutines, Batch messages per call with an idempotency key
// each, as the server's publish loops do; then reads the channels back in
// pages of 1000, as repairs do. It runs in this process: the store has no
// network part.
func storeBench(ctx context.Context, cfg *Config, _ string) (Figures, error) {
	const kind = "badger"
	st := startStatus(cfg, kind)
	defer st.end()
	dir, err := os.MkdirTemp("", "quicpush-bench-store-")
	if err != nil {
		return Figures{}, err
	}
	defer os.RemoveAll(dir)
	db, err := store.Open(dir, store.Options{MaxMessages: -1, MaxAge: -1, Logger: cfg.Logger})
	if err != nil {
		return Figures{}, err
	}
	defer db.Close()

	var (
		appended atomic.Int64
		claimed  atomic.Int64
		wg       sync.WaitGroup
	)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stopProfile, err := profiler(cfg, kind, nil)
	if err != nil {
		return Figures{}, err
	}
	s0, err := sampleSelf()
	if err != nil {
		return Figures{}, err
	}
	start := time.Now()
	until := start.Add(cfg.Duration)
	st.set(func() string {
		return fmt.Sprintf("appending: %d (%.0f/s)", appended.Load(), perSec(appended.Load(), time.Since(start)))
	})
	data := make([]byte, cfg.Size)
	for g := range cfg.Publishers {
		wg.Go(func() {
			channel := "room/store-" + strconv.Itoa(g%storeChannels)
			for k := 0; time.Now().Before(until) && ctx.Err() == nil; k++ {
				n := cfg.Batch
				if cfg.Messages > 0 {
					// Claim the batch's messages; the last one may be short.
					before := int(claimed.Add(int64(n))) - n
					if n = min(n, cfg.Messages-before); n <= 0 {
						return
					}
				}
				reqs := make([]store.AppendRequest, n)
				for j := range reqs {
					id := strconv.Itoa(g) + "-" + strconv.Itoa(k) + "-" + strconv.Itoa(j)
					reqs[j] = store.AppendRequest{Channel: channel, From: "publisher", ID: id, Data: data}
				}
				if _, err := db.Append(ctx, reqs); err != nil {
					cancel(err)
					return
				}
				appended.Add(int64(n))
			}
		})
	}
	wg.Wait()
	appendTime := time.Since(start)
	s1, err := sampleSelf()
	if err != nil {
		return Figures{}, err
	}
	c := coresBetween(s0, s1)
	if err := errors.Join(context.Cause(ctx), stopProfile()); err != nil {
		return Figures{}, fmt.Errorf("appending: %w", err)
	}

	var read int64
	start = time.Now()
	until = start.Add(cfg.Duration)
	st.set(func() string { return "reading back" })
	for c := 0; c < storeChannels && time.Now().Before(until); c++ {
		channel := "room/store-" + strconv.Itoa(c)
		b, err := db.Bounds(ctx, channel)
		if err != nil {
			return Figures{}, err
		}
		for from := b.First; from <= b.Last && time.Now().Before(until); {
			msgs, err := db.Range(ctx, channel, from, b.Last, 1000)
			if err != nil {
				return Figures{}, err
			}
			if len(msgs) == 0 {
				break
			}
			read += int64(len(msgs))
			from = msgs[len(msgs)-1].Seq + 1
		}
	}
	rangeTime := time.Since(start)
	f := Figures{
		Appended: appended.Load(), AppendPerSec: perSec(appended.Load(), appendTime),
		CPUCores: c.load, OtherCPUCores: c.other,
		Read: read, RangePerSec: perSec(read, rangeTime),
	}
	if f.Appended > 0 {
		f.CPUPerAppendUs = float64((s1.load - s0.load).Microseconds()) / float64(f.Appended)
	}
	return f, nil
}
