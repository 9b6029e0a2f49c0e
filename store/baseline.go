package store

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Baseline writes to Badger the records that Append stores for the same
// requests, with the same Badger options, and does nothing else: it is the
// floor that Append's cost is measured against (quicpush bench store).
// Each call is one transaction committed on the caller's goroutine; Badger
// merges the transactions committed meanwhile into one write and one fsync.
//
// It keeps none of DB's promises: no idempotency check, concurrent calls
// may commit their seqs out of order, a channel's meta may go backwards,
// nothing is validated, read back, watched or trimmed. Measure with it,
// never serve from it.
type Baseline struct {
	bdb  *badger.DB
	opts Options

	mu       sync.Mutex
	channels map[string]*baselineChannel
	lastID   uint64
}

type baselineChannel struct {
	id, epoch uint64
	last      atomic.Uint64
}

// OpenBaseline opens (or creates) a Baseline in dir with the Badger options
// that Open uses for opts. A Baseline knows only the channels it created.
func OpenBaseline(dir string, opts Options) (*Baseline, error) {
	o, err := fillOptions(opts)
	if err != nil {
		return nil, err
	}
	bdb, err := badger.Open(badgerOptions(dir, o))
	if err != nil {
		return nil, translate(err)
	}
	return &Baseline{bdb: bdb, opts: o, channels: make(map[string]*baselineChannel)}, nil
}

// Close closes Badger.
func (b *Baseline) Close() error { return translate(b.bdb.Close()) }

// channel returns name's channel, and whether this call created it.
func (b *Baseline) channel(name string) (*baselineChannel, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if c := b.channels[name]; c != nil {
		return c, false
	}
	b.lastID++
	c := &baselineChannel{id: b.lastID, epoch: newEpoch()}
	b.channels[name] = c
	return c, true
}

// Append stores reqs durably in one transaction: per request its message
// record and, when it has an ID, its idempotency key record (with the TTL);
// per run of requests on one channel the channel's meta; and the last
// channel id when it creates a channel. Every key and value is encoded by
// the code Append uses, into one buffer.
func (b *Baseline) Append(reqs []AppendRequest) error {
	now := b.opts.Now().Round(0)
	expiresAt := uint64(time.Now().Add(b.opts.IdempotencyTTL).Unix())
	size, entries := 0, 1 // the last channel id, if needed
	for i := range reqs {
		r := &reqs[i]
		size += msgKeyLen + encodedLen(r) + 1 + len(r.Channel) + metaLen
		entries += 2
		if r.ID != "" {
			size += idemKeyLen(r.From, r.ID) + 8
			entries++
		}
	}
	buf := make([]byte, 0, size+1+8)
	es := make([]badger.Entry, 0, entries)
	// add appends the entry whose key is buf[start:k] and value buf[k:].
	add := func(start, k int, expires uint64) {
		es = append(es, badger.Entry{Key: buf[start:k:k], Value: buf[k:len(buf):len(buf)], ExpiresAt: expires})
	}
	txn := b.bdb.NewTransaction(true)
	defer txn.Discard()
	created := false
	for i := 0; i < len(reqs); {
		c, isNew := b.channel(reqs[i].Channel)
		created = created || isNew
		j := i + 1
		for j < len(reqs) && reqs[j].Channel == reqs[i].Channel {
			j++
		}
		last := c.last.Add(uint64(j - i))
		seq := last - uint64(j-i)
		for ; i < j; i++ {
			r := &reqs[i]
			seq++
			start := len(buf)
			buf = appendMsgKey(buf, c.id, seq)
			k := len(buf)
			buf = appendMessage(buf, now, r)
			add(start, k, 0)
			if r.ID != "" {
				start = len(buf)
				buf = appendIdemKey(buf, c.id, r.From, r.ID)
				k = len(buf)
				buf = binary.BigEndian.AppendUint64(buf, seq)
				add(start, k, expiresAt)
			}
		}
		start := len(buf)
		buf = append(buf, prefixMeta)
		buf = append(buf, reqs[j-1].Channel...)
		k := len(buf)
		buf = meta{id: c.id, epoch: c.epoch, first: 1, last: last}.appendTo(buf)
		add(start, k, 0)
	}
	if created {
		b.mu.Lock()
		id := b.lastID
		b.mu.Unlock()
		start := len(buf)
		buf = append(buf, lastIDKey...)
		buf = binary.BigEndian.AppendUint64(buf, id)
		add(start, start+len(lastIDKey), 0)
	}
	for i := range es {
		if err := txn.SetEntry(&es[i]); err != nil {
			return translate(err)
		}
	}
	return translate(txn.Commit())
}
