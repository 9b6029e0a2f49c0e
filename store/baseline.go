package store

import (
	"encoding/binary"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Baseline writes to Badger the records that Append stores for the same
// requests, with the same Badger options, and the least it takes to do so
// durably at a useful rate: the floor that Append's cost is measured
// against (quicpush bench store).
//
// That least is a group commit: Badger fsyncs every transaction it writes
// (even those it writes together, one msync each), so one transaction per
// call is several times slower than DB's. A Baseline's writer goroutine
// puts the calls queued meanwhile into one transaction, up to the batch
// caps, and commits it while it builds the next, as DB's does; it does
// nothing else. It keeps none of DB's promises: no idempotency check, no
// validation, no heads for readers, no rollback of seqs on a failed commit,
// no Watch, no retention. Measure with it, never serve from it.
type Baseline struct {
	bdb   *badger.DB
	opts  Options
	queue chan *baselineCall
	stop  chan struct{}
	done  chan struct{} // closed when the writer has ended

	closeMu   sync.RWMutex // held shared while queueing, exclusively by Close
	closed    bool
	closeOnce sync.Once
	closeErr  error

	// The writer's.
	channels map[string]*baselineChannel
	lastID   uint64
	batches  uint64
}

type baselineCall struct {
	reqs []AppendRequest
	cost int64
	err  chan error // buffered
}

type baselineChannel struct {
	name      string
	id, epoch uint64
	last      uint64
	batch     uint64 // the last batch that wrote to it
}

type baselineBatch struct {
	no      uint64
	txn     *badger.Txn
	calls   []*baselineCall
	n       int
	cost    int64
	touched []*baselineChannel
	created bool
	now     time.Time
	expires uint64
	err     error
	landed  chan struct{}
}

// OpenBaseline opens (or creates) a Baseline in dir with the Badger options
// that Open uses for opts, and starts its writer. A Baseline knows only the
// channels it created.
func OpenBaseline(dir string, opts Options) (*Baseline, error) {
	o, err := fillOptions(opts)
	if err != nil {
		return nil, err
	}
	bdb, err := badger.Open(badgerOptions(dir, o))
	if err != nil {
		return nil, translate(err)
	}
	b := &Baseline{bdb: bdb, opts: o, queue: make(chan *baselineCall, 1024),
		stop: make(chan struct{}), done: make(chan struct{}), channels: make(map[string]*baselineChannel)}
	go b.run()
	return b, nil
}

// Close stops the writer, fails the calls not committed with ErrClosed and
// closes Badger.
func (b *Baseline) Close() error {
	b.closeOnce.Do(func() {
		close(b.stop)
		b.closeMu.Lock() // waits for the calls queueing
		b.closed = true
		b.closeMu.Unlock()
		<-b.done
		for {
			select {
			case c := <-b.queue:
				c.err <- ErrClosed
				continue
			default:
			}
			break
		}
		b.closeErr = translate(b.bdb.Close())
	})
	return b.closeErr
}

// Append stores reqs durably, with the records Append would store: per
// request its message and, when it has an ID, its idempotency key (with
// the TTL); per channel written its meta; the last channel id when a
// channel is created. The calls of one batch share its transaction.
func (b *Baseline) Append(reqs []AppendRequest) error {
	c := &baselineCall{reqs: reqs, err: make(chan error, 1)}
	for i := range reqs {
		c.cost += requestCost(&reqs[i])
	}
	b.closeMu.RLock()
	if b.closed {
		b.closeMu.RUnlock()
		return ErrClosed
	}
	select {
	case b.queue <- c:
	case <-b.stop:
		b.closeMu.RUnlock()
		return ErrClosed
	}
	b.closeMu.RUnlock()
	return <-c.err
}

// run is the writer: one batch committing, the next being built.
func (b *Baseline) run() {
	defer close(b.done)
	building := b.newBatch()
	var committing *baselineBatch
	var held *baselineCall // did not fit the batch being built
	defer func() {
		if committing != nil {
			<-committing.landed
			committing.finish(committing.err)
		}
		building.txn.Discard()
		building.finish(ErrClosed)
		if held != nil {
			held.err <- ErrClosed
		}
	}()
	for {
		// Build every call queued into the batch, until one does not fit.
		if held == nil {
			select {
			case held = <-b.queue:
			default:
			}
		}
		if held != nil && building.fits(held, &b.opts) {
			b.add(building, held)
			held = nil
			continue
		}
		if committing == nil && len(building.calls) > 0 {
			// The next transaction is created before the commit starts:
			// after, Badger would make it wait for the commit to be written.
			next := b.newBatch()
			b.submit(building)
			committing, building = building, next
			continue
		}
		var queue chan *baselineCall
		if held == nil {
			queue = b.queue
		}
		var landed chan struct{}
		if committing != nil {
			landed = committing.landed
		}
		select {
		case held = <-queue:
		case <-landed:
			committing.finish(committing.err)
			committing = nil
		case <-b.stop:
			return
		}
	}
}

func (b *Baseline) newBatch() *baselineBatch {
	b.batches++
	return &baselineBatch{no: b.batches, txn: b.bdb.NewTransaction(true), landed: make(chan struct{})}
}

func (bb *baselineBatch) fits(c *baselineCall, o *Options) bool {
	return len(bb.calls) == 0 || bb.n+len(c.reqs) <= o.MaxBatchEntries && bb.cost+c.cost <= o.MaxBatchBytes
}

// add writes c's messages and idempotency keys into bb, encoded by the
// code Append uses into one buffer per call.
func (b *Baseline) add(bb *baselineBatch, c *baselineCall) {
	if len(bb.calls) == 0 {
		bb.now = b.opts.Now().Round(0)
		bb.expires = uint64(time.Now().Add(b.opts.IdempotencyTTL).Unix())
	}
	bb.calls, bb.n, bb.cost = append(bb.calls, c), bb.n+len(c.reqs), bb.cost+c.cost
	if bb.err != nil {
		return
	}
	size, entries := recordsSize(c.reqs)
	buf := make([]byte, 0, size)
	es := make([]badger.Entry, 0, entries)
	// add appends the entry whose key is buf[start:k] and value buf[k:].
	add := func(start, k int, expires uint64) {
		es = append(es, badger.Entry{Key: buf[start:k:k], Value: buf[k:len(buf):len(buf)], ExpiresAt: expires})
	}
	for i := range c.reqs {
		r := &c.reqs[i]
		ch := b.channels[r.Channel]
		if ch == nil {
			b.lastID++
			ch = &baselineChannel{name: r.Channel, id: b.lastID, epoch: newEpoch()}
			b.channels[r.Channel] = ch
			bb.created = true
		}
		if ch.batch != bb.no {
			ch.batch = bb.no
			bb.touched = append(bb.touched, ch)
		}
		ch.last++
		start := len(buf)
		buf = appendMsgKey(buf, ch.id, ch.last)
		k := len(buf)
		buf = appendMessage(buf, bb.now, r)
		add(start, k, 0)
		if r.ID != "" {
			start = len(buf)
			buf = appendIdemKey(buf, ch.id, r.From, r.ID)
			k = len(buf)
			buf = binary.BigEndian.AppendUint64(buf, ch.last)
			add(start, k, bb.expires)
		}
	}
	for i := range es {
		if bb.err = bb.txn.SetEntry(&es[i]); bb.err != nil {
			return
		}
	}
}

// submit writes bb's metas and starts its commit.
func (b *Baseline) submit(bb *baselineBatch) {
	for _, ch := range bb.touched {
		if bb.err != nil {
			break
		}
		m := meta{id: ch.id, epoch: ch.epoch, first: 1, last: ch.last}
		bb.err = bb.txn.Set(metaKey(ch.name), m.encode())
	}
	if bb.created && bb.err == nil {
		bb.err = bb.txn.Set(lastIDKey, binary.BigEndian.AppendUint64(nil, b.lastID))
	}
	if bb.err != nil {
		bb.txn.Discard()
		close(bb.landed)
		return
	}
	bb.txn.CommitWith(func(err error) {
		if bb.err == nil {
			bb.err = err
		}
		close(bb.landed)
	})
}

func (bb *baselineBatch) finish(err error) {
	err = translate(err)
	for _, c := range bb.calls {
		c.err <- err
	}
}
