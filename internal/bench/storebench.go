package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quicpush/quicpush/store"
)

// storeChannels is how many channels the store scenario appends to.
const storeChannels = 16

// storeSliceCap bounds a slice that appends as many messages as the first
// did, in slices.
const storeSliceCap = 4

// After a store's warm-up or slice, the bench waits until the process is
// quiet (under a tenth of a core over storeQuietWindows consecutive windows
// of storeQuietWindow: a compaction may wait a while on the disk),
// storeSettleMax at most: a store's memtable flushes and compactions
// outlast its load (an L0 compaction takes seconds).
const (
	storeQuietWindow  = 250 * time.Millisecond
	storeQuietWindows = 3
	storeSettleMax    = 15 * time.Second
)

// storeBench measures durable appends (Badger, fsynced) from Publishers
// goroutines, Batch messages per call with an idempotency key each, as the
// server's publish loops do, into each kind of store: quicpush's (group
// commit, store.DB) and raw Badger (store.Baseline: the same records, and
// only the group commit that Badger needs to write them at this rate: it
// fsyncs each transaction). Both are opened and warmed up first, then
// measured in turn, in slices (sliceOrder) of as many messages each, while
// the other stays idle. Then quicpush's channels are read back in pages of
// 1000, as repairs do.
//
// It all runs in this process (the store has no network part), so the CPU
// figures are the process's. So that they are each store's own, every
// warm-up and slice is followed by a pause until the process is quiet
// (settle), whose CPU goes to the store that just ran: its memtable flushes
// and compactions, which outlast the load, and not the next one's. The
// warm-ups run in reverse order, so that what the pauses miss weighs on
// both alike: each side's slices follow the other's once. Goroutines carry
// the pprof label store=KIND, Badger's too (they are started under it).
func storeBench(ctx context.Context, cfg *Config, kinds ...string) ([]Figures, error) {
	st := startStatus(cfg, strings.Join(kinds, "+"))
	defer st.end()
	sides, closeAll, err := openSides(kinds, func(kind string) (*storeSide, error) { return openStoreSide(cfg, kind) })
	if err != nil {
		return nil, err
	}
	defer closeAll()
	order := slicesOf(len(kinds))
	slice := cfg.Duration * time.Duration(len(kinds)) / time.Duration(len(order))
	// Every warm-up and slice appends as many messages, so that both stores
	// hold as much at each turn, and flush their memtables and compact in
	// the same turns (a cost that grows with the store): the first runs for
	// its time, the others until they appended as many as it did (the
	// slices with Messages: their share of it, within their time).
	// A warm-up lasts a slice at least: a store's first memtables are
	// written to fresh memory, whose page faults would weigh on the first
	// slice measured.
	var warm int64
	for i := len(sides) - 1; i >= 0 && cfg.Warmup > 0; i-- {
		s := sides[i]
		d := max(cfg.Warmup, slice)
		if warm > 0 {
			d *= storeSliceCap
		}
		st.set(func() string { return s.kind + ": warming up" })
		n, err := s.run(ctx, cfg, time.Now().Add(d), warm)
		if err != nil {
			return nil, fmt.Errorf("%s: warming up: %w", s.kind, err)
		}
		warm = max(warm, n, 1)
		if err := settle(ctx); err != nil {
			return nil, err
		}
	}
	var quota int64
	if cfg.Messages > 0 {
		perSide := int64(len(order) / len(kinds))
		quota = (int64(cfg.Messages) + perSide - 1) / perSide
	}
	for n, i := range order {
		d := slice
		if n > 0 && cfg.Messages == 0 {
			d = storeSliceCap * slice // a bound, should one store be far slower
		}
		appended, err := sides[i].measure(ctx, cfg, st, d, quota, n == slices.Index(order, i))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", sides[i].kind, err)
		}
		if quota == 0 {
			quota = max(appended, 1)
		}
	}
	figs := make([]Figures, len(sides))
	for i, s := range sides {
		figs[i] = s.figures()
	}
	figs[0].Read, figs[0].RangePerSec, err = readBack(ctx, cfg, st, sides[0].db)
	return figs, err
}

// storeSide is one store under load, and what its measured slices added up
// to.
type storeSide struct {
	kind    string
	db      *store.DB // KindQuicpush
	raw     *store.Baseline
	dir     string
	batches []int        // per appending goroutine: calls made, for unique ids
	left    int64        // messages still to append (Messages)
	live    atomic.Int64 // messages appended, warm-up included

	appended int64
	wall     time.Duration // appending
	span     time.Duration // appending and settling, over which cpu and other are counted
	cpu      time.Duration
	other    float64 // CPU seconds of other processes
}

func openStoreSide(cfg *Config, kind string) (*storeSide, error) {
	dir, err := os.MkdirTemp("", "quicpush-bench-store-"+kind+"-")
	if err != nil {
		return nil, err
	}
	s := &storeSide{kind: kind, dir: dir, batches: make([]int, cfg.Publishers), left: math.MaxInt64}
	if cfg.Messages > 0 {
		s.left = int64(cfg.Messages)
	}
	opts := store.Options{MaxMessages: -1, MaxAge: -1, Logger: cfg.Logger}
	pprof.Do(context.Background(), pprof.Labels("store", kind), func(context.Context) {
		if kind == KindRaw {
			s.raw, err = store.OpenBaseline(dir, opts)
		} else {
			s.db, err = store.Open(dir, opts)
		}
	})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

func (s *storeSide) close() {
	if s.raw != nil {
		s.raw.Close()
	}
	if s.db != nil {
		s.db.Close()
	}
	os.RemoveAll(s.dir)
}

// run appends from Publishers goroutines until until, or until quota
// messages were appended if quota is positive, and returns how many it
// appended.
func (s *storeSide) run(ctx context.Context, cfg *Config, until time.Time, quota int64) (int64, error) {
	var left atomic.Int64
	left.Store(quota)
	before := s.live.Load()
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	data := make([]byte, cfg.Size)
	for g := range cfg.Publishers {
		wg.Go(func() {
			pprof.SetGoroutineLabels(pprof.WithLabels(ctx, pprof.Labels("store", s.kind)))
			channel := "room/store-" + strconv.Itoa(g%storeChannels)
			reqs := make([]store.AppendRequest, cfg.Batch)
			for time.Now().Before(until) && ctx.Err() == nil {
				n := cfg.Batch
				if quota > 0 {
					// Claim the call's messages; the last one may be short.
					left := left.Add(-int64(n))
					if n += int(min(left, 0)); n <= 0 {
						return
					}
				}
				k := s.batches[g]
				s.batches[g]++
				reqs = reqs[:n]
				for j := range reqs {
					id := strconv.Itoa(g) + "-" + strconv.Itoa(k) + "-" + strconv.Itoa(j)
					reqs[j] = store.AppendRequest{Channel: channel, From: "publisher", ID: id, Data: data}
				}
				var err error
				if s.raw != nil {
					err = s.raw.Append(reqs)
				} else {
					_, err = s.db.Append(ctx, reqs)
				}
				if err != nil {
					cancel(err)
					return
				}
				s.live.Add(int64(n))
			}
		})
	}
	wg.Wait()
	return s.live.Load() - before, context.Cause(ctx)
}

// measure appends for d or quota messages (if positive; within the rest
// of Messages), then settles, adding it all up, and returns how many it
// appended. The first slice of a side is profiled.
func (s *storeSide) measure(ctx context.Context, cfg *Config, st *status, d time.Duration, quota int64, profile bool) (int64, error) {
	if s.left <= 0 {
		return 0, nil
	}
	if quota > 0 {
		quota = min(quota, s.left)
	}
	stopProfile := func() error { return nil }
	if profile {
		var err error
		if stopProfile, err = profiler(cfg, s.kind, nil); err != nil {
			return 0, err
		}
	}
	s0, err := sampleSelf()
	if err != nil {
		return 0, errors.Join(err, stopProfile())
	}
	before := s.live.Load()
	st.set(func() string {
		d, n := time.Since(s0.at), s.live.Load()-before
		return fmt.Sprintf("%s: appending: %.0fs, %d (%.0f/s)", s.kind, d.Seconds(), n, perSec(n, d))
	})
	n, err := s.run(ctx, cfg, s0.at.Add(d), quota)
	end := time.Now()
	if err == nil {
		st.set(func() string { return s.kind + ": settling" })
		err = settle(ctx)
	}
	s1, serr := sampleSelf()
	if err := errors.Join(err, serr, stopProfile()); err != nil {
		return 0, fmt.Errorf("appending: %w", err)
	}
	span := s1.at.Sub(s0.at)
	s.left -= n
	s.appended += n
	s.wall += end.Sub(s0.at)
	s.span += span
	s.cpu += s1.load - s0.load
	s.other += coresBetween(s0, s1).other * span.Seconds()
	return n, nil
}

func (s *storeSide) figures() Figures {
	f := Figures{Appended: s.appended, AppendPerSec: perSec(s.appended, s.wall)}
	if secs := s.span.Seconds(); secs > 0 {
		f.CPUCores, f.OtherCPUCores = s.cpu.Seconds()/secs, s.other/secs
	}
	if s.appended > 0 {
		f.CPUPerAppendUs = float64(s.cpu.Microseconds()) / float64(s.appended)
	}
	return f
}

// settle waits until this process is quiet, storeSettleMax at most.
func settle(ctx context.Context) error {
	prev, err := cpuTime(os.Getpid())
	quiet := 0
	for until := time.Now().Add(storeSettleMax); err == nil && quiet < storeQuietWindows && time.Now().Before(until); {
		if err = sleep(ctx, storeQuietWindow); err != nil {
			break
		}
		var cpu time.Duration
		if cpu, err = cpuTime(os.Getpid()); err != nil {
			break
		}
		quiet++
		if cpu-prev > storeQuietWindow/10 {
			quiet = 0
		}
		prev = cpu
	}
	return err
}

// readBack reads every channel of db in pages of 1000, for at most
// Duration, and returns the messages read and their rate.
func readBack(ctx context.Context, cfg *Config, st *status, db *store.DB) (int64, float64, error) {
	var read int64
	start := time.Now()
	until := start.Add(cfg.Duration)
	st.set(func() string { return "reading back" })
	for c := 0; c < storeChannels && time.Now().Before(until); c++ {
		channel := "room/store-" + strconv.Itoa(c)
		b, err := db.Bounds(ctx, channel)
		if err != nil {
			return 0, 0, err
		}
		for from := b.First; from <= b.Last && time.Now().Before(until); {
			msgs, err := db.Range(ctx, channel, from, b.Last, 1000)
			if err != nil {
				return 0, 0, err
			}
			if len(msgs) == 0 {
				break
			}
			read += int64(len(msgs))
			from = msgs[len(msgs)-1].Seq + 1
		}
	}
	return read, perSec(read, time.Since(start)), nil
}
