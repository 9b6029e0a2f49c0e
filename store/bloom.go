package store

import "math/bits"

// bloomBitsPerKey and bloomProbes size a blockedBloom for about 1% false
// positives.
const (
	bloomBitsPerKey = 10
	bloomProbes     = 7
)

// blockedBloom is a Bloom filter whose bits for one key all lie in one
// 64-byte block (Putze, Sanders, Singler: "Cache-, hash- and space-efficient
// Bloom filters", 2007). A lookup or an insert touches one cache line where
// a classic filter touches one per probe: on the writer's path, those
// misses also evicted Badger's memtable.
type blockedBloom struct {
	blocks [][8]uint64
}

func newBlockedBloom(keys int) *blockedBloom {
	return &blockedBloom{blocks: make([][8]uint64, max(1, (keys*bloomBitsPerKey+511)/512))}
}

// locate returns h's block and the bits of its probes, 9 bits each.
func (b *blockedBloom) locate(h uint64) (*[8]uint64, uint64) {
	i, _ := bits.Mul64(h, uint64(len(b.blocks)))
	// The block is chosen by h's high bits; the probes take a remix.
	return &b.blocks[i], h * 0x9e3779b97f4a7c15
}

func (b *blockedBloom) add(h uint64) {
	blk, p := b.locate(h)
	for range bloomProbes {
		blk[p&511>>6] |= 1 << (p & 63)
		p >>= 9
	}
}

func (b *blockedBloom) has(h uint64) bool {
	blk, p := b.locate(h)
	for range bloomProbes {
		if blk[p&511>>6]&(1<<(p&63)) == 0 {
			return false
		}
		p >>= 9
	}
	return true
}

// size is the filter's size in bytes.
func (b *blockedBloom) size() int { return 64 * len(b.blocks) }
