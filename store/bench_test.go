package store_test

import (
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/quicpush/quicpush/store"
)

// openBench opens a store for a benchmark: on disk (durable, fsynced) or
// in Badger's memory mode (no fsync: what the rest costs).
func openBench(b *testing.B, inMemory bool) *store.DB {
	dir := ""
	if !inMemory {
		dir = b.TempDir()
	}
	return open(b, dir, store.Options{InMemory: inMemory, MaxMessages: -1, MaxAge: -1})
}

var modes = []struct {
	name     string
	inMemory bool
}{{"disk", false}, {"memory", true}}

// BenchmarkAppendConcurrent: many publishers, each appending one 100-byte
// message with an idempotency key and waiting for it to be durable; group
// commit gathers them into batches.
func BenchmarkAppendConcurrent(b *testing.B) {
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			db := openBench(b, m.inMemory)
			data := make([]byte, 100)
			var ids atomic.Uint64
			b.ReportAllocs()
			b.SetParallelism(128) // appenders per GOMAXPROCS
			b.ResetTimer()        // not the Open
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					id := ids.Add(1)
					_, err := db.Append(b.Context(), []store.AppendRequest{{
						Channel: "room/" + strconv.Itoa(int(id%16)), From: "u", ID: strconv.FormatUint(id, 10), Data: data,
					}})
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// BenchmarkAppendBatch: one publisher appending n 100-byte messages with
// idempotency keys in one call.
func BenchmarkAppendBatch(b *testing.B) {
	for _, m := range modes {
		for _, n := range []int{64, 1024} {
			b.Run(m.name+"/"+strconv.Itoa(n), func(b *testing.B) {
				db := openBench(b, m.inMemory)
				reqs := make([]store.AppendRequest, n)
				for i := range reqs {
					reqs[i] = store.AppendRequest{Channel: "room/1", From: "u", Data: make([]byte, 100)}
				}
				id := 0
				b.ReportAllocs()
				for b.Loop() {
					for i := range reqs {
						id++
						reqs[i].ID = strconv.Itoa(id)
					}
					if _, err := db.Append(b.Context(), reqs); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "msgs/s")
			})
		}
	}
}

// BenchmarkRange reads 1000 100-byte messages, as a repair would.
func BenchmarkRange(b *testing.B) {
	const n = 1000
	db := openBench(b, false)
	reqs := make([]store.AppendRequest, n)
	for i := range reqs {
		reqs[i] = store.AppendRequest{Channel: "room/1", From: "u", ID: strconv.Itoa(i), Data: make([]byte, 100)}
	}
	if _, err := db.Append(b.Context(), reqs); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		msgs, err := db.Range(b.Context(), "room/1", 1, n, n)
		if err != nil || len(msgs) != n {
			b.Fatal(len(msgs), err)
		}
	}
	b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkAppendCalls: 64 appenders, 16 100-byte messages per call with an
// idempotency key each (the bench store scenario), into the store and into
// store.Baseline (the same records with only a group commit): the ratio of
// the two is the store's overhead over Badger.
func BenchmarkAppendCalls(b *testing.B) {
	const per = 16
	for _, m := range modes {
		for _, kind := range []string{"store", "baseline"} {
			b.Run(kind+"/"+m.name, func(b *testing.B) {
				var appendFn func([]store.AppendRequest) error
				if kind == "store" {
					db := openBench(b, m.inMemory)
					appendFn = func(reqs []store.AppendRequest) error {
						_, err := db.Append(b.Context(), reqs)
						return err
					}
				} else {
					dir := ""
					if !m.inMemory {
						dir = b.TempDir()
					}
					bl, err := store.OpenBaseline(dir, store.Options{InMemory: m.inMemory, Logger: quiet})
					if err != nil {
						b.Fatal(err)
					}
					b.Cleanup(func() { bl.Close() })
					appendFn = bl.Append
				}
				data := make([]byte, 100)
				var callers atomic.Uint64
				b.ReportAllocs()
				b.SetParallelism(64 / runtime.GOMAXPROCS(0))
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					g := callers.Add(1)
					channel := "room/" + strconv.Itoa(int(g%16))
					reqs := make([]store.AppendRequest, per)
					for k := 0; pb.Next(); k++ {
						for j := range reqs {
							id := strconv.FormatUint(g, 10) + "-" + strconv.Itoa(k) + "-" + strconv.Itoa(j)
							reqs[j] = store.AppendRequest{Channel: channel, From: "u", ID: id, Data: data}
						}
						if err := appendFn(reqs); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N*per)/b.Elapsed().Seconds(), "msgs/s")
			})
		}
	}
}
