package store

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Badger counts an entry as its key, its value and 12 bytes (version and
// meta bytes); the batch caps count the same way.
const (
	entryOverhead = 12
	deleteCost    = msgKeyLen + entryOverhead
	lastIDCost    = 1 + 8 + entryOverhead
	// trimBytes is what a batch may spend on retention's deletes and metas,
	// on top of MaxBatchBytes.
	trimBytes = 128 << 10
)

// requestCost is what r adds to a batch: its message, its idempotency key
// and its channel's meta (counted for every request: an upper bound).
func requestCost(r *AppendRequest) int64 {
	n := msgKeyLen + encodedLen(r) + entryOverhead + metaCost(r.Channel)
	if r.ID != "" {
		n += 1 + 8 + binary.MaxVarintLen64 + len(r.From) + len(r.ID) + 8 + entryOverhead
	}
	return int64(n)
}

func metaCost(channel string) int {
	return 1 + len(channel) + metaLen + entryOverhead
}

// maxRequestCost is the cost of the largest request accepted.
func maxRequestCost(maxMessageSize int) int64 {
	return requestCost(&AppendRequest{
		Channel: string(make([]byte, MaxNameLen)),
		From:    string(make([]byte, MaxNameLen)),
		ID:      string(make([]byte, MaxNameLen)),
		Data:    make([]byte, maxMessageSize),
	})
}

// appendOp is one Append call, queued for the writer.
type appendOp struct {
	reqs []AppendRequest
	cost int64
	res  []AppendResult
	err  error
	done chan struct{} // closed by finish
}

func (op *appendOp) finish(err error) {
	if err != nil {
		op.res, op.err = nil, err
	}
	close(op.done)
}

// trim asks the writer to move a channel's First up to first, deleting the
// messages below it.
type trim struct {
	channel string
	first   uint64
	done    chan error // buffered, so that the writer never blocks on it
}

// writerState belongs to the writer goroutine.
type writerState struct {
	lastID  uint64 // last channel id assigned
	savedID uint64 // last channel id committed
	batch   uint64 // batches built, to mark the heads a batch touches
	// sizes are the requests of the last two batches submitted: callers
	// often split into two groups, one committing while the other waits.
	sizes     [2]int
	committed *batch // the batch committing, nil if none
	held      *batch // committed, answered with the next to land
	building  *batch // the next one
	backlog   []*appendOp
	trims     []*trim // retention's, not done yet
}

// Append durably appends reqs, assigning each channel's next seqs in request
// order, and returns one result per request once they are durable.
//
// Concurrent calls are committed together (group commit), each call
// entirely in one transaction: all its requests are stored or none. A call
// over MaxBatchEntries requests or MaxBatchBytes is rejected with
// ErrTooLarge, and an invalid request (empty Channel, a name over
// MaxNameLen) with ErrInvalid, before anything is stored.
//
// If ctx ends while the call waits, Append returns ctx.Err() and the outcome
// is unknown: the requests may still be committed. Retrying with the same
// idempotency keys (AppendRequest.ID) is safe: a request already stored
// returns its original seq with Duplicate set.
func (db *DB) Append(ctx context.Context, reqs []AppendRequest) ([]AppendResult, error) {
	p, err := db.Queue(ctx, reqs)
	if err != nil {
		return nil, err
	}
	select {
	case <-p.Done():
		return p.Result()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Pending is an Append queued by Queue.
type Pending struct{ op *appendOp }

// Done is closed once the append is durable or failed.
func (p Pending) Done() <-chan struct{} { return p.op.done }

// Result is Append's answer; call it once Done is closed.
func (p Pending) Result() ([]AppendResult, error) { return p.op.res, p.op.err }

// Queue is Append in two steps: it checks reqs (refusing them as Append
// does) and queues them for the writer, then returns; the Pending's Done
// closes once they are durable or failed. Calls queued one after another
// are committed in that order, so a caller can queue its next call while
// the one before commits, and the writer then answers both together.
func (db *DB) Queue(ctx context.Context, reqs []AppendRequest) (Pending, error) {
	if err := ctx.Err(); err != nil {
		return Pending{}, err
	}
	cost, err := db.check(reqs)
	if err != nil {
		return Pending{}, err
	}
	leave, err := db.enter()
	if err != nil {
		return Pending{}, err
	}
	defer leave()
	op := &appendOp{reqs: reqs, cost: cost, done: make(chan struct{})}
	if len(reqs) == 0 {
		close(op.done)
		return Pending{op}, nil
	}
	select {
	case db.queue <- op:
		return Pending{op}, nil
	case <-db.ctx.Done():
		return Pending{}, ErrClosed
	case <-ctx.Done():
		return Pending{}, ctx.Err()
	}
}

// check validates reqs and returns their cost.
func (db *DB) check(reqs []AppendRequest) (int64, error) {
	if len(reqs) > db.opts.MaxBatchEntries {
		return 0, fmt.Errorf("%w: %d messages in one call, at most %d", ErrTooLarge, len(reqs), db.opts.MaxBatchEntries)
	}
	var cost int64
	for i := range reqs {
		r := &reqs[i]
		if r.Channel == "" || len(r.Channel) > MaxNameLen || len(r.From) > MaxNameLen || len(r.ID) > MaxNameLen {
			return 0, fmt.Errorf("%w: message %d: Channel must have 1 to %d bytes, From and ID at most %d",
				ErrInvalid, i, MaxNameLen, MaxNameLen)
		}
		if len(r.Data) > db.opts.MaxMessageSize {
			return 0, fmt.Errorf("%w: message %d has %d bytes, at most %d", ErrTooLarge, i, len(r.Data), db.opts.MaxMessageSize)
		}
		cost += requestCost(r)
	}
	if cost > db.opts.MaxBatchBytes {
		return 0, fmt.Errorf("%w: %d bytes in one call, at most %d", ErrTooLarge, cost, db.opts.MaxBatchBytes)
	}
	return cost, nil
}

// runWriter is the single writer. It pipelines two batches: while one
// commits (Badger writes and fsyncs it), it builds the next from the calls
// queued meanwhile, up to the batch caps, and commits that one as soon as
// the first is durable. Only one commit is in flight at a time, so a failed
// one can roll back the heads before anything later is written.
func (db *DB) runWriter() {
	w := &db.writer
	w.savedID = w.lastID
	w.building = db.newBatch(nil)
	defer db.stopWriter()
	for {
		db.fill()
		if w.committed == nil && (len(w.building.ops) > 0 || len(w.trims) > 0) {
			db.submit()
			continue
		}
		if w.committed == nil && w.held != nil {
			// The batch it waited for failed to build: nothing commits.
			db.releaseHeld()
		}
		var queue chan *appendOp
		if len(w.backlog) == 0 {
			queue = db.queue
		}
		var landed chan struct{}
		if w.committed != nil {
			landed = w.committed.landed
		}
		select {
		case op := <-queue:
			w.backlog = append(w.backlog, op)
		case t := <-db.trims:
			w.trims = append(w.trims, t)
		case <-landed:
			db.land()
		case <-db.ctx.Done():
			return
		}
	}
}

// fill moves the backlog, then every call queued, into the batch being
// built, until one does not fit.
func (db *DB) fill() {
	w := &db.writer
	for {
		for len(w.backlog) > 0 && w.building.add(w.backlog[0]) {
			w.backlog = w.backlog[1:]
		}
		if len(w.backlog) > 0 {
			return
		}
		select {
		case op := <-db.queue:
			w.backlog = append(w.backlog, op)
		case t := <-db.trims:
			w.trims = append(w.trims, t)
		default:
			return
		}
	}
}

// stopWriter waits for the commit in flight, answers it, and fails every
// call and trim not committed with ErrClosed.
func (db *DB) stopWriter() {
	w := &db.writer
	if w.committed != nil {
		<-w.committed.landed
		db.land()
	}
	db.releaseHeld()
	w.building.txn.Discard()
	for _, op := range append(w.building.ops, w.backlog...) {
		op.finish(ErrClosed)
	}
	for _, t := range w.trims {
		t.done <- ErrClosed
	}
}

// batch is one transaction: built by the writer, then committed.
type batch struct {
	db  *DB
	no  uint64
	txn *badger.Txn
	// prev is the batch committing when txn was created: txn's snapshot
	// misses its writes, so its idempotency keys and channels are looked up
	// in it.
	prev *batch
	now  time.Time // the messages' time (Options.Now)
	// wall is when the batch started, by Badger's clock, and expiresAt
	// when its idempotency keys expire, in Badger's Unix seconds.
	wall      time.Time
	expiresAt uint64
	ops       []*appendOp
	n         int              // requests in ops
	cost      int64            // their cost
	err       error            // of building (then it is failed, not committed), or of its commit
	touched   []*head          // heads whose next or nextFirst the batch moved
	created   map[string]*head // channels whose first message is in the batch
	msgs      []Message        // stored, in order
	// seen indexes msgs with an idempotency key by its hash (idemFilter.hash);
	// collided is set when two keys in msgs share a hash, and only one is
	// indexed.
	seen     map[uint64]int32
	collided bool

	// Set when the batch is submitted.
	commits []commitPos // what each head of touched commits to
	trims   []*trim     // done once the batch lands
	lastID  uint64      // the last channel id the batch commits
	// Set when the commit ends, before landed is closed.
	landed chan struct{}
}

// commitPos is a head's position once a batch commits.
type commitPos struct {
	h           *head
	first, last uint64
}

// newBatch starts a batch. Its transaction is created now, before prev's
// commit begins: later, Badger would make it wait for prev to be written.
func (db *DB) newBatch(prev *batch) *batch {
	w := &db.writer
	w.batch++
	return &batch{
		db:      db,
		no:      w.batch,
		txn:     db.bdb.NewTransaction(true),
		prev:    prev,
		created: make(map[string]*head),
		// Sized like the larger of the last two batches, so that they
		// rarely grow.
		seen:   make(map[uint64]int32, max(w.sizes[0], w.sizes[1])),
		msgs:   make([]Message, 0, max(w.sizes[0], w.sizes[1])),
		landed: make(chan struct{}),
	}
}

// add builds op into b, unless it does not fit the batch caps.
func (b *batch) add(op *appendOp) bool {
	o := &b.db.opts
	if len(b.ops) > 0 && (b.n+len(op.reqs) > o.MaxBatchEntries || b.cost+op.cost > o.MaxBatchBytes) {
		return false
	}
	if len(b.ops) == 0 {
		b.now = b.db.opts.Now().Round(0)
		b.wall = time.Now()
		b.expiresAt = uint64(b.wall.Add(b.db.opts.IdempotencyTTL).Unix())
		b.db.idem.prune(b.wall)
	}
	b.ops, b.n, b.cost = append(b.ops, op), b.n+len(op.reqs), b.cost+op.cost
	if b.err == nil {
		b.err = b.addAppends(op)
	}
	return true
}

// submit adds the trims that fit to the batch being built, writes its metas
// and starts its commit; or fails it if it could not be built.
func (db *DB) submit() {
	w := &db.writer
	b := w.building
	var pending []*trim
	err := b.err
	if err == nil {
		pending, b.trims, err = b.addTrims(w.trims)
	}
	if err == nil {
		err = b.writeMetas()
	}
	if err != nil {
		// Nothing is in flight: the committed positions are the base.
		db.rollBack(b)
		err = translate(err)
		db.log.Error("group commit failed", "messages", len(b.msgs), "err", err)
		for _, op := range b.ops {
			op.finish(err)
		}
		for _, t := range w.trims {
			t.done <- err
		}
		w.trims = nil
		b.txn.Discard()
		w.building = db.newBatch(nil)
		return
	}
	w.trims = pending
	w.sizes = [2]int{w.sizes[1], b.n}
	b.lastID = w.lastID
	b.prev = nil // built: let the batch before it go (else each holds the last, while busy)
	next := db.newBatch(b)
	db.commit(b.txn, func(err error) {
		b.err = err
		close(b.landed)
	})
	w.committed, w.building = b, next
}

// land finishes the batch whose commit ended: it publishes the new heads,
// notifies and answers; or, if the commit failed, answers with the error and
// rolls back the heads and channel ids it and the batch being built handed
// out, and hands the latter's calls back to the backlog.
func (db *DB) land() {
	w := &db.writer
	b := w.committed
	w.committed = nil
	if b.err != nil {
		db.releaseHeld()
		next := w.building
		db.rollBack(b, next)
		next.txn.Discard()
		w.backlog = append(next.ops, w.backlog...)
		w.building = db.newBatch(nil)
		err := translate(b.err)
		db.log.Error("group commit failed", "messages", len(b.msgs), "err", err)
		for _, op := range b.ops {
			op.finish(err)
		}
		for _, t := range b.trims {
			t.done <- err
		}
		return
	}
	db.mu.Lock()
	for _, c := range b.commits {
		c.h.first, c.h.last = c.first, c.last
	}
	for name, h := range b.created {
		db.heads[name] = h
	}
	db.mu.Unlock()
	w.savedID = b.lastID
	if len(w.building.ops) == 0 {
		// Nothing built on b's snapshot: start from a fresh one, so that an
		// idle writer holds no old read timestamp.
		w.building.txn.Discard()
		w.building = db.newBatch(nil)
	} else if w.held == nil {
		// The next batch commits right behind b: notify and answer both
		// together (see the package doc). At most one batch waits.
		w.held = b
		return
	}
	if h := w.held; h != nil {
		w.held = nil
		db.notify(append(h.msgs, b.msgs...))
		h.answer()
		b.answer()
		return
	}
	db.release(b)
}

// releaseHeld releases the batch waiting for the next, if any.
func (db *DB) releaseHeld() {
	db.release(db.writer.held)
	db.writer.held = nil
}

// release notifies the watchers of b's messages, then answers its calls.
func (db *DB) release(b *batch) {
	if b == nil {
		return
	}
	db.notify(b.msgs)
	b.answer()
}

// answer tells b's calls and trims that b is durable.
func (b *batch) answer() {
	for _, op := range b.ops {
		op.finish(nil)
	}
	for _, t := range b.trims {
		t.done <- nil
	}
}

// rollBack forgets the seqs and channel ids that batches handed out, which
// were not stored: the next batch would leave holes. Nothing may be in
// flight but them.
func (db *DB) rollBack(batches ...*batch) {
	for _, b := range batches {
		for _, h := range b.touched {
			h.next, h.nextFirst = h.last, h.first
		}
	}
	db.writer.lastID = db.writer.savedID
}

// head returns channel's head for the batch, creating the channel (id and
// epoch) if create is set and it does not exist; nil if it does not.
func (b *batch) head(channel string, create bool) (*head, error) {
	h := b.created[channel]
	if h == nil && b.prev != nil {
		h = b.prev.created[channel]
	}
	if h == nil {
		var err error
		if h, err = b.db.lookup(channel, b.txn); err != nil {
			return nil, err
		}
	}
	if h == nil {
		if !create {
			return nil, nil
		}
		b.db.writer.lastID++
		h = newHead(channel, meta{id: b.db.writer.lastID, epoch: newEpoch(), first: 1})
		h.born = b.no
		b.created[channel] = h
	}
	if h.batch != b.no {
		h.batch = b.no
		b.touched = append(b.touched, h)
	}
	return h, nil
}

func (b *batch) addAppends(op *appendOp) error {
	op.res = make([]AppendResult, len(op.reqs))
	// The call's keys and values share one buffer, and its Badger entries
	// one slice (never grown: the transaction points into it). The messages
	// handed to watchers keep their Data in the buffer.
	size, entries := recordsSize(op.reqs)
	buf := make([]byte, 0, size)
	es := make([]badger.Entry, 0, entries)
	set := func(e badger.Entry) error {
		es = append(es, e)
		return b.txn.SetEntry(&es[len(es)-1])
	}
	var h *head
	for i := range op.reqs {
		r := &op.reqs[i]
		if h == nil || h.name != r.Channel {
			var err error
			if h, err = b.head(r.Channel, true); err != nil {
				return err
			}
		}
		var ik []byte
		var hash uint64
		if r.ID != "" {
			start := len(buf)
			buf = appendIdemKey(buf, h.id, r.From, r.ID)
			ik = buf[start:len(buf):len(buf)]
			hash = b.db.idem.hash(ik)
			res, dup, err := b.idempotent(h, r, ik, hash)
			if err != nil {
				return err
			}
			if dup {
				buf = buf[:start]
				res.Duplicate = true
				op.res[i] = res
				continue
			}
		}
		h.next++
		res := AppendResult{Epoch: h.epoch, Seq: h.next}
		if ik != nil {
			v := len(buf)
			buf = binary.BigEndian.AppendUint64(buf, res.Seq)
			if err := set(badger.Entry{Key: ik, Value: buf[v:len(buf):len(buf)], ExpiresAt: b.expiresAt}); err != nil {
				return err
			}
			b.db.idem.add(hash, b.wall, b.expiresAt)
			if _, taken := b.seen[hash]; taken {
				b.collided = true
			} else {
				b.seen[hash] = int32(len(b.msgs))
			}
		}
		k := len(buf)
		buf = appendMsgKey(buf, h.id, res.Seq)
		v := len(buf)
		buf = appendMessage(buf, b.now, r)
		val := buf[v:len(buf):len(buf)]
		if err := set(badger.Entry{Key: buf[k:v:v], Value: val}); err != nil {
			return err
		}
		b.msgs = append(b.msgs, Message{
			Channel: r.Channel, Epoch: h.epoch, Seq: res.Seq, Time: b.now,
			From: r.From, ID: r.ID, Data: val[len(val)-len(r.Data):], Critical: r.Critical,
		})
		op.res[i] = res
	}
	return nil
}

// idempotent returns the result stored for r's idempotency key ik (of hash
// hash), if any: earlier in this batch or the previous one, or committed
// within the TTL. Nothing is looked up unless the idempotency filter, which
// holds the keys of both batches too, says the key may be there; Badger is
// read only for a channel older than both.
func (b *batch) idempotent(h *head, r *AppendRequest, ik []byte, hash uint64) (AppendResult, bool, error) {
	if !b.db.idem.mayHold(hash) {
		return AppendResult{}, false, nil
	}
	if res, ok := b.stored(r, hash); ok {
		return res, true, nil
	}
	if b.prev != nil {
		if res, ok := b.prev.stored(r, hash); ok {
			return res, true, nil
		}
		if h.born == b.prev.no {
			return AppendResult{}, false, nil // a new channel has no keys
		}
	}
	if h.born == b.no {
		return AppendResult{}, false, nil
	}
	item, err := b.txn.Get(ik)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return AppendResult{}, false, nil
	}
	if err != nil {
		return AppendResult{}, false, err
	}
	var seq uint64
	if err := item.Value(func(v []byte) (err error) {
		seq, err = decodeUint64(v)
		return err
	}); err != nil {
		return AppendResult{}, false, err
	}
	return AppendResult{Epoch: h.epoch, Seq: seq}, true, nil
}

// stored returns the result of the message in b with r's idempotency key
// (of hash hash), if any.
func (b *batch) stored(r *AppendRequest, hash uint64) (AppendResult, bool) {
	same := func(m *Message) bool { return m.ID == r.ID && m.From == r.From && m.Channel == r.Channel }
	if i, ok := b.seen[hash]; ok && same(&b.msgs[i]) {
		return AppendResult{Epoch: b.msgs[i].Epoch, Seq: b.msgs[i].Seq}, true
	}
	if b.collided {
		for i := range b.msgs {
			if m := &b.msgs[i]; m.ID != "" && same(m) {
				return AppendResult{Epoch: m.Epoch, Seq: m.Seq}, true
			}
		}
	}
	return AppendResult{}, false
}

// addTrims deletes, within trimBytes, the messages below each trim's first
// and moves the channel's First. It returns the trims left to finish in a
// later batch and those done once this batch commits.
func (b *batch) addTrims(trims []*trim) (pending, done []*trim, err error) {
	budget := int64(trimBytes)
	for _, t := range trims {
		cost := int64(metaCost(t.channel) + deleteCost)
		if budget < cost {
			pending = append(pending, t)
			continue
		}
		h, err := b.head(t.channel, false)
		if err != nil {
			return nil, nil, err
		}
		if h == nil {
			done = append(done, t)
			continue
		}
		budget -= cost - deleteCost
		// Never past last: the head is kept when every message is deleted.
		first := min(t.first, h.last+1)
		for ; h.nextFirst < first && budget >= deleteCost; h.nextFirst++ {
			if err := b.txn.Delete(appendMsgKey(nil, h.id, h.nextFirst)); err != nil {
				return nil, nil, err
			}
			budget -= deleteCost
		}
		if h.nextFirst < first {
			pending = append(pending, t)
		} else {
			done = append(done, t)
		}
	}
	return pending, done, nil
}

// writeMetas writes the metas that changed and the last channel id, and
// records the positions that the commit makes durable.
func (b *batch) writeMetas() error {
	for _, h := range b.touched {
		if h.next == h.last && h.nextFirst == h.first {
			continue // only duplicates
		}
		m := meta{id: h.id, epoch: h.epoch, first: h.nextFirst, last: h.next}
		if err := b.txn.Set(metaKey(h.name), m.encode()); err != nil {
			return err
		}
		b.commits = append(b.commits, commitPos{h: h, first: h.nextFirst, last: h.next})
	}
	if len(b.created) > 0 {
		if err := b.txn.Set(lastIDKey, binary.BigEndian.AppendUint64(nil, b.db.writer.lastID)); err != nil {
			return err
		}
	}
	return nil
}

// newEpoch returns a random non-zero epoch: a counter would repeat after the
// store is wiped, and clients would take the new 1..N for duplicates.
func newEpoch() uint64 {
	var b [8]byte
	for {
		rand.Read(b[:]) // never fails since Go 1.24
		if e := binary.BigEndian.Uint64(b[:]); e != 0 {
			return e
		}
	}
}

// recordsSize is the bytes of the keys and values Append stores for reqs,
// and how many Badger entries they make: a message each, and an
// idempotency key for each with an ID.
func recordsSize(reqs []AppendRequest) (size, entries int) {
	for i := range reqs {
		r := &reqs[i]
		size += msgKeyLen + encodedLen(r)
		entries++
		if r.ID != "" {
			size += idemKeyLen(r.From, r.ID) + 8
			entries++
		}
	}
	return size, entries
}
