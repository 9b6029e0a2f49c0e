package store

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/dgraph-io/ristretto/v2/z"
	"github.com/stretchr/testify/require"
)

// TestBlockedBloom: every key added is found, and a filter holding the keys
// it was sized for says "maybe" to about 0.3% of the others.
func TestBlockedBloom(t *testing.T) {
	for _, n := range []int{1, 1000, 100000} {
		b := newBlockedBloom(n)
		rng := rand.New(rand.NewPCG(1, uint64(n)))
		keys := make([]uint64, n)
		for i := range keys {
			keys[i] = z.MemHash([]byte{byte(i), byte(i >> 8), byte(i >> 16), 0x03})
			b.add(keys[i])
		}
		for _, k := range keys {
			require.True(t, b.has(k))
		}
		const others = 200000
		fp := 0
		for range others {
			if b.has(rng.Uint64()) {
				fp++
			}
		}
		require.Less(t, float64(fp)/others, 0.006, "%d keys: false positives", n)
		t.Logf("%d keys, %d bytes: %.2f%% false positives", n, b.size(), 100*float64(fp)/others)
	}
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
