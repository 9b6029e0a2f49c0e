package store

import (
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/dgraph-io/ristretto/v2/z"
	"github.com/stretchr/testify/require"
)

// TestIdemFilter: before the scan of the keys stored before Open is in,
// every key may be stored; after, the keys added or scanned are, and most
// others are not; a generation is dropped once its keys have expired.
func TestIdemFilter(t *testing.T) {
	const ttl = time.Hour
	now := time.Unix(1_000_000, 0)
	f := newIdemFilter(ttl, nil)
	exp := func() uint64 { return uint64(now.Add(ttl).Unix()) }
	f.add(1, now, exp())
	require.True(t, f.mayHold(2), "scan not in")

	scanned := newIdemGen(2)
	scanned.bloom.Add(3)
	scanned.expires = exp() - 1
	f.scanned <- scanned
	require.True(t, f.mayHold(1))
	require.True(t, f.mayHold(3))
	others := 0
	for h := uint64(1000); h < 11000; h++ {
		if f.mayHold(h * 0x9e3779b97f4a7c15) {
			others++
		}
	}
	require.Less(t, others, 500, "false positives")

	// A new generation starts every ttl/idemGenPeriods; the first is
	// dropped once its keys have expired, then the scanned one.
	now = now.Add(ttl / idemGenPeriods)
	f.prune(now)
	f.add(4, now, exp())
	require.Len(t, f.gens, 3)
	now = now.Add(ttl - ttl/idemGenPeriods)
	f.prune(now)
	require.Len(t, f.gens, 1, "the first generation expired at now, the scanned one before")
	f.add(5, now, exp())
	require.False(t, f.mayHold(1), "expired")
	require.False(t, f.mayHold(3), "expired")
	require.True(t, f.mayHold(4))
	require.True(t, f.mayHold(5))
}

// TestIdempotencyAfterReopen: the keys stored before a reopen are found
// once the scan filled the filter, and new keys are stored.
func TestIdempotencyAfterReopen(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), RetentionInterval: -1}
	db, err := Open(dir, opts)
	require.NoError(t, err)
	const n = 1000
	reqs := make([]AppendRequest, n)
	for i := range reqs {
		reqs[i] = AppendRequest{Channel: "c" + strconv.Itoa(i%3), From: "u", ID: strconv.Itoa(i), Data: []byte("x")}
	}
	first, err := db.Append(t.Context(), reqs)
	require.NoError(t, err)
	require.NoError(t, db.Close())

	db, err = Open(dir, opts)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, db.Close()) })
	require.Eventually(t, func() bool { return len(db.idem.scanned) == 1 }, 10*time.Second, time.Millisecond)
	fresh := AppendRequest{Channel: "c0", From: "u", ID: "new", Data: []byte("y")}
	res, err := db.Append(t.Context(), append(reqs[:n:n], fresh))
	require.NoError(t, err)
	for i, r := range res[:n] {
		require.Equal(t, AppendResult{Epoch: first[i].Epoch, Seq: first[i].Seq, Duplicate: true}, r, i)
	}
	require.False(t, res[n].Duplicate)
	require.Equal(t, uint64(n/3+2), res[n].Seq)
	require.True(t, db.idem.known, "the scan was used")
}

func BenchmarkIdemFilter(b *testing.B) {
	f := newIdemFilter(time.Hour, nil)
	f.known = true
	now := time.Now()
	exp := uint64(now.Add(time.Hour).Unix())
	for i := range 2 << 20 {
		f.add(z.MemHash([]byte{byte(i), byte(i >> 8), byte(i >> 16)}), now, exp)
	}
	h := uint64(0x12345)
	b.ReportAllocs()
	for b.Loop() {
		h = h*0x9e3779b97f4a7c15 + 1
		if !f.mayHold(h) {
			f.add(h, now, exp)
		}
	}
}
