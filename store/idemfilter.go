package store

import (
	"math"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/ristretto/v2/z"
	"github.com/greatroar/blobloom"
)

// Sizing of the idempotency filter's generations, in keys, and its total
// size, in bytes. Past the total, the last generation takes every new key
// and answers "maybe" more often: more reads, never a wrong answer.
const (
	idemGenMin     = 1 << 14
	idemGenMax     = 1 << 24
	idemFilterMax  = 64 << 20
	idemGenPeriods = 8 // generations per TTL
	// The false positives of the generations add up, and each costs a
	// Badger read.
	idemFalsePositive = 0.003
)

// idemFilter spares the writer a Badger read for an idempotency key that
// cannot be stored, the common case: it says "maybe" for every key stored
// within the TTL and for about 0.3% of the others per generation, and only
// those are read.
//
// It is a list of Bloom filters (generations) of the keys written since
// Open, each dropped once all its keys have expired in Badger, plus one of
// the keys stored before Open, which a scan fills in the background after
// Open. Until the scan is done, every key is "maybe". It belongs to the
// writer goroutine. Expiry uses time.Now, as Badger's TTL does.
type idemFilter struct {
	ttl     time.Duration
	hash    func(ik []byte) uint64 // of an idempotency key
	gens    []*idemGen             // oldest first; the last one takes the new keys
	known   bool                   // gens hold the keys stored before Open: the scan is done
	scanned chan *idemGen
}

type idemGen struct {
	bloom    *blobloom.Filter // blocked: a key's bits lie in one cache line
	n, max   int              // keys added, keys it was sized for
	start    time.Time        // when its first key was added
	expires  uint64           // the latest ExpiresAt (Unix seconds) of its keys
	sizeByte int
}

// newIdemFilter returns a filter of keys that expire after ttl; hash nil
// means z.MemHash.
func newIdemFilter(ttl time.Duration, hash func([]byte) uint64) *idemFilter {
	if hash == nil {
		hash = z.MemHash
	}
	return &idemFilter{ttl: ttl, hash: hash, scanned: make(chan *idemGen, 1)}
}

func newIdemGen(keys int) *idemGen {
	keys = min(max(keys, idemGenMin), idemGenMax)
	b := blobloom.NewOptimized(blobloom.Config{Capacity: uint64(keys), FPRate: idemFalsePositive})
	return &idemGen{bloom: b, max: keys, sizeByte: int(b.NumBits() / 8)}
}

// mayHold reports whether the key of hash h may be stored.
func (f *idemFilter) mayHold(h uint64) bool {
	if !f.known {
		select {
		case g := <-f.scanned:
			if g != nil {
				f.gens = append([]*idemGen{g}, f.gens...)
			}
			f.known = true
		default:
			return true
		}
	}
	for _, g := range f.gens {
		if g.bloom.Has(h) {
			return true
		}
	}
	return false
}

// prune drops the generations whose keys have all expired in Badger at now.
func (f *idemFilter) prune(now time.Time) {
	live := f.gens[:0]
	for _, g := range f.gens {
		if g.expires > uint64(now.Unix()) { // Badger: expired once ExpiresAt <= now
			live = append(live, g)
		}
	}
	clear(f.gens[len(live):])
	f.gens = live
}

// add records that the key of hash h is stored at now, to expire at
// expiresAt (its Badger ExpiresAt).
func (f *idemFilter) add(h uint64, now time.Time, expiresAt uint64) {
	var g *idemGen
	if len(f.gens) > 0 {
		g = f.gens[len(f.gens)-1]
	}
	if g == nil || (g.n >= g.max || now.Sub(g.start) >= f.ttl/idemGenPeriods) && f.size() < idemFilterMax {
		next := idemGenMin
		if g != nil {
			// Sized for 4 times as many keys as the last held: fewer
			// generations, whose false positives add up.
			next = 4 * g.n
		}
		g = newIdemGen(next)
		g.start = now
		f.gens = append(f.gens, g)
	}
	g.bloom.Add(h)
	g.n++
	g.expires = max(g.expires, expiresAt)
}

func (f *idemFilter) size() int {
	n := 0
	for _, g := range f.gens {
		n += g.sizeByte
	}
	return n
}

// scanIdem fills the filter of the idempotency keys stored before Open and
// hands it to the writer: a first pass counts them, to size it.
func (db *DB) scanIdem() {
	var g *idemGen
	err := db.view(func(txn *badger.Txn) error {
		keys := 0
		err := db.eachIdemKey(txn, func(*badger.Item) { keys++ })
		if err != nil || keys == 0 {
			return err
		}
		g = newIdemGen(keys)
		err = db.eachIdemKey(txn, func(item *badger.Item) {
			g.bloom.Add(db.idem.hash(item.Key()))
			g.n++
			exp := item.ExpiresAt()
			if exp == 0 { // no TTL: kept for as long as the filter
				exp = math.MaxUint64
			}
			g.expires = max(g.expires, exp)
		})
		return err
	})
	if err != nil {
		if db.ctx.Err() == nil {
			db.log.Error("idempotency keys scan failed: every key is read", "err", err)
		}
		return
	}
	db.idem.scanned <- g
}

// eachIdemKey calls fn with every idempotency key in txn, until Close.
func (db *DB) eachIdemKey(txn *badger.Txn, fn func(*badger.Item)) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixIdem}})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		if err := db.ctx.Err(); err != nil {
			return ErrClosed
		}
		fn(it.Item())
	}
	return nil
}
