package store

import "math/bits"

// bloomBitsPerKey and bloomProbes size a blockedBloom for about 0.3%
// false positives: the idempotency filter asks several generations, whose
// false positives add up, and each costs a Badger read.
const (
	bloomBitsPerKey = 14
	bloomProbes     = 10
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

// locate returns h's block, and the first bit and the step of its probes
// in the block (double hashing).
func (b *blockedBloom) locate(h uint64) (blk *[8]uint64, bit, step uint64) {
	i, _ := bits.Mul64(h, uint64(len(b.blocks)))
	// The block is chosen by h's high bits; the probes take a remix.
	p := h * 0x9e3779b97f4a7c15
	return &b.blocks[i], p >> 55, p>>46 | 1
}

func (b *blockedBloom) add(h uint64) {
	blk, bit, step := b.locate(h)
	for range bloomProbes {
		blk[bit>>6&7] |= 1 << (bit & 63)
		bit += step
	}
}

func (b *blockedBloom) has(h uint64) bool {
	blk, bit, step := b.locate(h)
	for range bloomProbes {
		if blk[bit>>6&7]&(1<<(bit&63)) == 0 {
			return false
		}
		bit += step
	}
	return true
}

// size is the filter's size in bytes.
func (b *blockedBloom) size() int { return 64 * len(b.blocks) }
