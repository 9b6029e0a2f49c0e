package store

import (
	"math"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/ristretto/v2/z"
)

// Sizing of the idempotency filter's generations, in keys, and its total
// size, in bytes. Past the total, the last generation takes every new key
// and answers "maybe" more often: more reads, never a wrong answer.
const (
	idemGenMin        = 1 << 14
	idemGenMax        = 1 << 24
	idemFilterMax     = 64 << 20
	idemFalsePositive = 0.01
	idemGenPeriods    = 8 // generations per TTL
)

// idemFilter spares the writer a Badger read for an idempotency key that
// cannot be stored, the common case: it says "maybe" for every key stored
// within the TTL and for about 1% of the others, and only those are read.
//
// It is a list of Bloom filters (generations) of the keys written since
// Open, each dropped once all its keys have expired in Badger, plus one of
// the keys stored before Open, which a scan fills in the background after
// Open. Until the scan is done, every key is "maybe". It belongs to the
// writer goroutine. Expiry uses time.Now, as Badger's TTL does.
type idemFilter struct {
	ttl     time.Duration
	gens    []*idemGen // oldest first; the last one takes the new keys
	known   bool       // gens hold the keys stored before Open: the scan is done
	scanned chan *idemGen
	now     func() time.Time // time.Now; tests move it
}

type idemGen struct {
	bloom    *z.Bloom
	n, max   int       // keys added, keys it was sized for
	start    time.Time // when its first key was added
	expires  time.Time // once past, every key added has expired in Badger
	sizeByte int
}

func newIdemFilter(ttl time.Duration) *idemFilter {
	return &idemFilter{ttl: ttl, scanned: make(chan *idemGen, 1), now: time.Now}
}

func newIdemGen(keys int) *idemGen {
	keys = min(max(keys, idemGenMin), idemGenMax)
	b := z.NewBloomFilter(float64(keys), idemFalsePositive)
	return &idemGen{bloom: b, max: keys, sizeByte: b.TotalSize()}
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

// add records that the key of hash h is being stored now, with the TTL.
func (f *idemFilter) add(h uint64) {
	now := f.now()
	live := f.gens[:0]
	for _, g := range f.gens {
		if !now.After(g.expires) {
			live = append(live, g)
		}
	}
	clear(f.gens[len(live):])
	f.gens = live
	var g *idemGen
	if len(f.gens) > 0 {
		g = f.gens[len(f.gens)-1]
	}
	if g == nil || (g.n >= g.max || now.Sub(g.start) >= f.ttl/idemGenPeriods) && f.size() < idemFilterMax {
		next := idemGenMin
		if g != nil {
			next = 2 * g.n
		}
		g = newIdemGen(next)
		g.start = now
		f.gens = append(f.gens, g)
	}
	g.bloom.Add(h)
	g.n++
	// Badger's expiry is in whole seconds, rounded down.
	g.expires = now.Add(f.ttl + time.Second)
}

func (f *idemFilter) size() int {
	n := 0
	for _, g := range f.gens {
		n += g.sizeByte
	}
	return n
}

// idemHash is the filter's hash of an idempotency key.
func idemHash(ik []byte) uint64 { return z.MemHash(ik) }

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
		var last uint64
		err = db.eachIdemKey(txn, func(item *badger.Item) {
			g.bloom.Add(idemHash(item.Key()))
			g.n++
			if item.ExpiresAt() == 0 { // no TTL: kept for as long as the filter
				last = math.MaxInt64 - 1
			}
			last = max(last, item.ExpiresAt())
		})
		g.expires = time.Unix(int64(last)+1, 0)
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
