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
	lastID uint64 // last channel id assigned
	batch  uint64 // batches built, to mark the heads a batch touches
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
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cost, err := db.check(reqs)
	if err != nil {
		return nil, err
	}
	leave, err := db.enter()
	if err != nil {
		return nil, err
	}
	if len(reqs) == 0 {
		leave()
		return nil, nil
	}
	op := &appendOp{reqs: reqs, cost: cost, done: make(chan struct{})}
	select {
	case db.queue <- op:
		leave()
	case <-db.ctx.Done():
		leave()
		return nil, ErrClosed
	case <-ctx.Done():
		leave()
		return nil, ctx.Err()
	}
	select {
	case <-op.done:
		return op.res, op.err
	case <-ctx.Done():
		return nil, ctx.Err()
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

// runWriter is the single writer: it takes as many queued calls as fit the
// batch caps, commits them in one transaction, and loops.
func (db *DB) runWriter() {
	var (
		carry *appendOp // taken from the queue, did not fit the last batch
		trims []*trim   // retention's, not done yet
	)
	defer func() {
		if carry != nil {
			carry.finish(ErrClosed)
		}
		for _, t := range trims {
			t.done <- ErrClosed
		}
	}()
	for {
		if carry == nil && len(trims) == 0 {
			select {
			case carry = <-db.queue:
			case t := <-db.trims:
				trims = append(trims, t)
			case <-db.ctx.Done():
			}
		}
		if db.ctx.Err() != nil {
			return
		}
		var ops []*appendOp
		var n int
		var cost int64
		if carry != nil {
			ops, n, cost, carry = append(ops, carry), len(carry.reqs), carry.cost, nil
		}
	fill:
		for {
			select {
			case op := <-db.queue:
				if n+len(op.reqs) > db.opts.MaxBatchEntries || cost+op.cost > db.opts.MaxBatchBytes {
					carry = op
					break fill
				}
				ops, n, cost = append(ops, op), n+len(op.reqs), cost+op.cost
			case t := <-db.trims:
				trims = append(trims, t)
			default:
				break fill
			}
		}
		trims = db.commit(ops, trims)
	}
}

// batch is one transaction being built by the writer.
type batch struct {
	db      *DB
	no      uint64
	txn     *badger.Txn
	now     time.Time
	touched []*head          // heads whose meta the batch writes
	created map[string]*head // channels whose first message is in the batch
	seen    map[string]AppendResult
	msgs    []Message
}

// commit writes ops and as much of trims as fits in one transaction, then
// publishes, notifies and answers. It returns the trims not finished.
func (db *DB) commit(ops []*appendOp, trims []*trim) []*trim {
	n := 0
	for _, op := range ops {
		n += len(op.reqs)
	}
	db.writer.batch++
	b := &batch{
		db:      db,
		no:      db.writer.batch,
		txn:     db.bdb.NewTransaction(true),
		now:     db.opts.Now().Round(0),
		created: make(map[string]*head),
		seen:    make(map[string]AppendResult, n),
		msgs:    make([]Message, 0, n),
	}
	defer b.txn.Discard()
	lastID := db.writer.lastID

	err := b.addAppends(ops)
	var pending, done []*trim
	if err == nil {
		pending, done, err = b.addTrims(trims)
	}
	if err == nil {
		err = b.commit()
	}
	if err != nil {
		// Nothing was stored: forget the seqs and ids handed out, or the
		// next batch would leave holes.
		for _, h := range b.touched {
			h.next, h.nextFirst = h.last, h.first
		}
		db.writer.lastID = lastID
		err = translate(err)
		db.log.Error("group commit failed", "messages", len(b.msgs), "err", err)
		for _, op := range ops {
			op.finish(err)
		}
		for _, t := range trims {
			t.done <- err
		}
		return nil
	}

	db.mu.Lock()
	for _, h := range b.touched {
		h.last, h.first = h.next, h.nextFirst
	}
	for name, h := range b.created {
		db.heads[name] = h
	}
	db.mu.Unlock()
	db.notify(b.msgs)
	for _, op := range ops {
		op.finish(nil)
	}
	for _, t := range done {
		t.done <- nil
	}
	return pending
}

// head returns channel's head for the batch, creating the channel (id and
// epoch) if create is set and it does not exist; nil if it does not.
func (b *batch) head(channel string, create bool) (*head, error) {
	h := b.created[channel]
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
		b.created[channel] = h
	}
	if h.batch != b.no {
		h.batch = b.no
		b.touched = append(b.touched, h)
	}
	return h, nil
}

func (b *batch) addAppends(ops []*appendOp) error {
	ttl := b.db.opts.IdempotencyTTL
	for _, op := range ops {
		op.res = make([]AppendResult, len(op.reqs))
		for i := range op.reqs {
			r := &op.reqs[i]
			h, err := b.head(r.Channel, true)
			if err != nil {
				return err
			}
			var ik []byte
			if r.ID != "" {
				ik = idemKey(h.id, r.From, r.ID)
				res, dup, err := b.idempotent(h, ik)
				if err != nil {
					return err
				}
				if dup {
					res.Duplicate = true
					op.res[i] = res
					continue
				}
			}
			h.next++
			res := AppendResult{Epoch: h.epoch, Seq: h.next}
			// The key and the value share one allocation; the key is capped so
			// that no append to it can reach the value.
			kv := appendMessage(appendMsgKey(make([]byte, 0, msgKeyLen+encodedLen(r)), h.id, res.Seq), b.now, r)
			val := kv[msgKeyLen:]
			if err := b.txn.SetEntry(badger.NewEntry(kv[:msgKeyLen:msgKeyLen], val)); err != nil {
				return err
			}
			if ik != nil {
				e := badger.NewEntry(ik, binary.BigEndian.AppendUint64(nil, res.Seq)).WithTTL(ttl)
				if err := b.txn.SetEntry(e); err != nil {
					return err
				}
				b.seen[string(ik)] = res
			}
			b.msgs = append(b.msgs, Message{
				Channel: r.Channel, Epoch: h.epoch, Seq: res.Seq, Time: b.now,
				From: r.From, ID: r.ID, Data: val[len(val)-len(r.Data):], Critical: r.Critical,
			})
			op.res[i] = res
		}
	}
	return nil
}

// idempotent returns the result stored under idempotency key ik, if any:
// earlier in this batch or committed within the TTL.
func (b *batch) idempotent(h *head, ik []byte) (AppendResult, bool, error) {
	if res, ok := b.seen[string(ik)]; ok {
		return res, true, nil
	}
	if b.created[h.name] == h {
		return AppendResult{}, false, nil // a new channel has no keys
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

// commit writes the metas that changed and commits, durably.
func (b *batch) commit() error {
	for _, h := range b.touched {
		if h.next == h.last && h.nextFirst == h.first {
			continue // only duplicates
		}
		m := meta{id: h.id, epoch: h.epoch, first: h.nextFirst, last: h.next}
		if err := b.txn.Set(metaKey(h.name), m.encode()); err != nil {
			return err
		}
	}
	if len(b.created) > 0 {
		if err := b.txn.Set(lastIDKey, binary.BigEndian.AppendUint64(nil, b.db.writer.lastID)); err != nil {
			return err
		}
	}
	return b.txn.Commit()
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
