// Package memstore is the in-memory twin of the Badger store: the same
// semantics (seqs, epochs, idempotency, retention, cursors, Watch), with
// nothing durable. It serves tests, and servers that need no history
// across restarts.
//
// All methods are safe for concurrent use. Retention runs only when
// RunRetention is called. Watch functions are called in commit order, one
// batch at a time, on the appending goroutine and before its Append
// returns; they may call Bounds and Range but not Append.
package memstore

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/quicpush/quicpush/store"
)

// Options configure a Store. The zero value is usable.
type Options struct {
	// MaxMessageSize is the largest Data accepted, in bytes; Append of a
	// larger one returns an error wrapping store.ErrTooLarge. Zero or
	// negative: 64 KiB.
	MaxMessageSize int
	// IdempotencyTTL is how long an idempotency key (Channel, From, ID) is
	// remembered. Zero or negative: 24 h.
	IdempotencyTTL time.Duration
	// MaxMessages is how many messages (the newest) each channel retains.
	// Zero: 100000; negative: unlimited.
	MaxMessages int
	// MaxAge is how long a message is retained. Zero: 7 days; negative:
	// unlimited.
	MaxAge time.Duration
	// Now is the clock of message times, idempotency TTLs and retention.
	// Nil: time.Now.
	Now func() time.Time
	// Logger receives the panics of Watch functions. Nil: slog.Default().
	Logger *slog.Logger
}

func fillOptions(o Options) Options {
	if o.MaxMessageSize <= 0 {
		o.MaxMessageSize = 64 << 10
	}
	if o.IdempotencyTTL <= 0 {
		o.IdempotencyTTL = 24 * time.Hour
	}
	if o.MaxMessages == 0 {
		o.MaxMessages = 100000
	}
	if o.MaxAge == 0 {
		o.MaxAge = 7 * 24 * time.Hour
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Store is an in-memory channel log.
type Store struct {
	opts Options

	mu       sync.RWMutex
	channels map[string]*channel
	idem     map[idemKey]idemEntry
	cursors  map[cursorKey]store.Position
	batches  uint64 // batches committed, the ticket of the next one to notify

	// Watch calls run one batch at a time, in commit order, without mu
	// (so that they may read the store).
	watchMu  sync.Mutex
	turn     *sync.Cond // on watchMu
	notified uint64     // batches notified
	watchers []*watcher
}

type channel struct {
	epoch       uint64
	first, last uint64
	msgs        []store.Message // the retained ones: msgs[i].Seq == first+i
}

type idemKey struct{ channel, from, id string }

type idemEntry struct {
	seq     uint64
	expires time.Time
}

type cursorKey struct{ user, channel string }

type watcher struct {
	fn      func([]store.Message)
	stopped bool // guarded by Store.watchMu
}

// New returns an empty store.
func New(opts Options) *Store {
	s := &Store{
		opts:     fillOptions(opts),
		channels: make(map[string]*channel),
		idem:     make(map[idemKey]idemEntry),
		cursors:  make(map[cursorKey]store.Position),
	}
	s.turn = sync.NewCond(&s.watchMu)
	return s
}

// Append appends reqs, all or none, assigning each channel's next seqs in
// request order. A request whose (Channel, From, ID) was appended within
// the IdempotencyTTL stores nothing and returns the original seq with
// Duplicate set.
func (s *Store) Append(ctx context.Context, reqs []store.AppendRequest) ([]store.AppendResult, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for i, r := range reqs {
		if r.Channel == "" || len(r.Channel) > store.MaxNameLen || len(r.From) > store.MaxNameLen || len(r.ID) > store.MaxNameLen {
			return nil, fmt.Errorf("%w: message %d: Channel must have 1 to %d bytes, From and ID at most %d",
				store.ErrInvalid, i, store.MaxNameLen, store.MaxNameLen)
		}
		if len(r.Data) > s.opts.MaxMessageSize {
			return nil, fmt.Errorf("%w: message %d has %d bytes, at most %d", store.ErrTooLarge, i, len(r.Data), s.opts.MaxMessageSize)
		}
	}
	if len(reqs) == 0 {
		return nil, nil
	}
	res := make([]store.AppendResult, len(reqs))
	var msgs []store.Message

	s.mu.Lock()
	now := s.opts.Now()
	for i, r := range reqs {
		c := s.channels[r.Channel]
		if c == nil {
			c = &channel{epoch: newEpoch(), first: 1}
			s.channels[r.Channel] = c
		}
		k := idemKey{r.Channel, r.From, r.ID}
		if r.ID != "" {
			if e, ok := s.idem[k]; ok && now.Before(e.expires) {
				res[i] = store.AppendResult{Epoch: c.epoch, Seq: e.seq, Duplicate: true}
				continue
			}
		}
		c.last++
		m := store.Message{Channel: r.Channel, Epoch: c.epoch, Seq: c.last, Time: now,
			From: r.From, ID: r.ID, Data: append([]byte(nil), r.Data...)}
		c.msgs = append(c.msgs, m)
		m.Critical = r.Critical // for the watchers only, like the Badger store
		msgs = append(msgs, m)
		if r.ID != "" {
			s.idem[k] = idemEntry{seq: m.Seq, expires: now.Add(s.opts.IdempotencyTTL)}
		}
		res[i] = store.AppendResult{Epoch: c.epoch, Seq: m.Seq}
	}
	s.batches++
	ticket := s.batches
	s.mu.Unlock()

	s.notify(ticket, msgs)
	return res, nil
}

// notify calls the watchers with batch ticket's messages once every earlier
// batch has been notified.
func (s *Store) notify(ticket uint64, msgs []store.Message) {
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	for s.notified != ticket-1 {
		s.turn.Wait()
	}
	if len(msgs) > 0 {
		for _, w := range s.watchers {
			if !w.stopped {
				s.watchMu.Unlock() // so that fn may stop itself or others
				s.call(w.fn, msgs)
				s.watchMu.Lock()
			}
		}
	}
	s.notified = ticket
	s.turn.Broadcast()
}

func (s *Store) call(fn func([]store.Message), msgs []store.Message) {
	defer func() {
		if r := recover(); r != nil {
			s.opts.Logger.Error("watch callback panicked", "panic", r)
		}
	}()
	fn(msgs)
}

// Watch calls fn with every batch of appended messages (duplicates
// excluded), in commit order, once they are visible to Bounds and Range.
// The slice and its Data are shared: read-only. After stop returns, fn is
// not called again, except for a call already running.
func (s *Store) Watch(fn func([]store.Message)) (stop func()) {
	w := &watcher{fn: fn}
	s.watchMu.Lock()
	s.watchers = append(s.watchers, w)
	s.watchMu.Unlock()
	return func() {
		s.watchMu.Lock()
		defer s.watchMu.Unlock()
		w.stopped = true
		ws := make([]*watcher, 0, len(s.watchers))
		for _, x := range s.watchers {
			if x != w {
				ws = append(ws, x)
			}
		}
		s.watchers = ws
	}
}

// Bounds returns channel's epoch, first retained and last seq;
// {Epoch: 0, First: 1, Last: 0} for a channel that never stored a message.
func (s *Store) Bounds(ctx context.Context, channel string) (store.Bounds, error) {
	if err := ctx.Err(); err != nil {
		return store.Bounds{}, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	c := s.channels[channel]
	if c == nil {
		return store.Bounds{First: 1}, nil
	}
	return store.Bounds{Epoch: c.epoch, First: c.first, Last: c.last}, nil
}

// Range returns channel's retained messages with from <= seq <= to, in seq
// order, at most limit (which must be positive) of them.
func (s *Store) Range(ctx context.Context, channel string, from, to uint64, limit int) ([]store.Message, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("%w: limit %d", store.ErrInvalid, limit)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	c := s.channels[channel]
	if c == nil {
		return nil, nil
	}
	from, to = max(from, c.first), min(to, c.last)
	if from > to {
		return nil, nil
	}
	to = min(to, from+uint64(limit)-1)
	return append([]store.Message(nil), c.msgs[from-c.first:to-c.first+1]...), nil
}

// SetCursors records, for each cursor, that its user has handled its
// channel up to its position. Within one epoch it never moves a cursor
// backwards; a different epoch replaces it.
func (s *Store) SetCursors(ctx context.Context, cursors []store.Cursor) error {
	for _, c := range cursors {
		if err := checkCursorNames(c.User, c.Channel); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range cursors {
		k := cursorKey{c.User, c.Channel}
		if cur, ok := s.cursors[k]; ok && cur.Covers(c.Pos) {
			continue
		}
		s.cursors[k] = c.Pos
	}
	return nil
}

// Cursor returns user's position on channel, zero if none was set.
func (s *Store) Cursor(ctx context.Context, user, channel string) (store.Position, error) {
	if err := checkCursorNames(user, channel); err != nil {
		return store.Position{}, err
	}
	if err := ctx.Err(); err != nil {
		return store.Position{}, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cursors[cursorKey{user, channel}], nil
}

func checkCursorNames(user, channel string) error {
	if user == "" || channel == "" || len(user) > store.MaxNameLen || len(channel) > store.MaxNameLen {
		return fmt.Errorf("%w: user and channel must have 1 to %d bytes", store.ErrInvalid, store.MaxNameLen)
	}
	return nil
}

// RunRetention applies MaxMessages and MaxAge to every channel, moving
// First past the messages dropped (Last never changes), and forgets expired
// idempotency keys.
func (s *Store) RunRetention(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Now()
	for _, c := range s.channels {
		drop := 0
		if n := s.opts.MaxMessages; n > 0 && len(c.msgs) > n {
			drop = len(c.msgs) - n
		}
		if s.opts.MaxAge > 0 {
			cutoff := now.Add(-s.opts.MaxAge)
			for drop < len(c.msgs) && c.msgs[drop].Time.Before(cutoff) {
				drop++
			}
		}
		// Reslicing drops the messages from memory at the next growth.
		c.msgs = c.msgs[drop:]
		c.first += uint64(drop)
	}
	for k, e := range s.idem {
		if !now.Before(e.expires) {
			delete(s.idem, k)
		}
	}
	return nil
}

func newEpoch() uint64 {
	var b [8]byte
	for {
		rand.Read(b[:]) // never fails since Go 1.24
		if e := binary.BigEndian.Uint64(b[:]); e != 0 {
			return e
		}
	}
}
