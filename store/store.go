package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// MaxNameLen is the longest channel name, From, ID or user accepted, in
// bytes. Longer ones are rejected with ErrInvalid: they end up in keys, and
// one oversized key would fail a whole group commit.
const MaxNameLen = 1024

// Options configure a DB. The zero value is usable.
type Options struct {
	// MaxMessageSize is the largest Data accepted, in bytes; Append of a
	// larger one returns an error wrapping ErrTooLarge. Zero: 64 KiB.
	MaxMessageSize int
	// IdempotencyTTL is how long an idempotency key (Channel, From, ID) is
	// remembered; it must outlast every publisher's retry horizon.
	// Zero: 24 h.
	IdempotencyTTL time.Duration
	// MaxMessages is how many messages (the newest) each channel retains.
	// Zero: 100000; negative: unlimited.
	MaxMessages int
	// MaxAge is how long a message is retained. Zero: 7 days; negative:
	// unlimited.
	MaxAge time.Duration
	// RetentionInterval is how often MaxMessages and MaxAge are applied.
	// Zero: 1 min; negative: never in the background (see RunRetention).
	RetentionInterval time.Duration
	// GCInterval is how often Badger's value-log GC runs. Zero: 5 min;
	// negative: never.
	GCInterval time.Duration
	// MaxBatchEntries caps the messages of one group commit, and of one
	// Append call. Zero: 4096.
	MaxBatchEntries int
	// MaxBatchBytes caps the size of one group commit, and of one Append
	// call, as Badger counts it (keys, values and 12 bytes per entry). It
	// must hold a message of MaxMessageSize and stay under Badger's
	// transaction limit (15% of its 64 MiB memtable). Zero: 8 MiB.
	MaxBatchBytes int64
	// Logger receives the store's and Badger's logs. Nil: slog.Default().
	Logger *slog.Logger
	// InMemory keeps everything in memory and ignores dir: nothing is
	// durable. For benchmarks only.
	InMemory bool
	// Now is the clock for message times and retention by age (nil:
	// time.Now); tests set it to age messages without waiting.
	Now func() time.Time

	// idemHash hashes idempotency keys (nil: z.MemHash); tests make every
	// key collide with it.
	idemHash func([]byte) uint64
}

// fillOptions returns o with its defaults filled in, or an error wrapping
// ErrInvalid.
func fillOptions(o Options) (Options, error) {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.MaxMessageSize, 64<<10)
	defDur(&o.IdempotencyTTL, 24*time.Hour)
	def(&o.MaxMessages, 100000)
	defDur(&o.MaxAge, 7*24*time.Hour)
	defDur(&o.RetentionInterval, time.Minute)
	defDur(&o.GCInterval, 5*time.Minute)
	def(&o.MaxBatchEntries, 4096)
	if o.MaxBatchBytes == 0 {
		o.MaxBatchBytes = 8 << 20
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	switch {
	case o.MaxMessageSize < 0:
		return o, fmt.Errorf("%w: negative MaxMessageSize", ErrInvalid)
	case o.IdempotencyTTL < 0:
		return o, fmt.Errorf("%w: negative IdempotencyTTL", ErrInvalid)
	case o.MaxBatchEntries < 0 || o.MaxBatchBytes < 0:
		return o, fmt.Errorf("%w: negative batch cap", ErrInvalid)
	case maxRequestCost(o.MaxMessageSize) > o.MaxBatchBytes:
		return o, fmt.Errorf("%w: MaxBatchBytes %d cannot hold a message of MaxMessageSize %d",
			ErrInvalid, o.MaxBatchBytes, o.MaxMessageSize)
	}
	return o, nil
}

// DB is a channel log on Badger. It implements the server's Store
// interface; all its methods are safe for concurrent use.
type DB struct {
	opts Options
	log  *slog.Logger
	bdb  *badger.DB

	mu    sync.RWMutex
	heads map[string]*head // channels seen since Open, never evicted

	queue  chan *appendOp
	trims  chan *trim
	writer writerState // owned by the writer goroutine
	idem   *idemFilter // owned by the writer goroutine
	// commit starts a transaction's commit and calls done once it ended:
	// (*badger.Txn).CommitWith; tests replace it to fail commits.
	commit func(txn *badger.Txn, done func(error))

	watchMu  sync.Mutex
	watchers atomic.Pointer[[]*watcher] // copied on write

	// closeMu is held shared by every call using Badger and exclusively by
	// Close, so Badger is never closed under a call.
	closeMu   sync.RWMutex
	closed    bool
	ctx       context.Context // ends when Close starts
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// head is a channel's position, cached from its meta. name, id, epoch and
// born never change. first and last are what is committed, guarded by
// DB.mu. nextFirst, next and batch belong to the writer goroutine: what the
// batch being built will commit.
type head struct {
	name            string
	id, epoch       uint64
	first, last     uint64
	nextFirst, next uint64
	batch           uint64 // the last batch that touched it
	born            uint64 // the batch that created the channel; 0: before
}

func newHead(name string, m meta) *head {
	return &head{name: name, id: m.id, epoch: m.epoch,
		first: m.first, last: m.last, nextFirst: m.first, next: m.last}
}

// badgerOptions are the Badger options of a store in dir with o (filled).
func badgerOptions(dir string, o Options) badger.Options {
	bo := badger.DefaultOptions(dir).WithSyncWrites(true).
		WithLogger(badgerLogger{o.Logger.With("component", "badger")})
	if o.InMemory {
		bo = bo.WithDir("").WithValueDir("").WithInMemory(true)
	}
	return bo
}

// Open opens (or creates) the store in dir and starts its writer,
// retention and value-log GC goroutines; Close stops them.
func Open(dir string, opts Options) (*DB, error) {
	o, err := fillOptions(opts)
	if err != nil {
		return nil, err
	}
	log := o.Logger.With("component", "store")
	bdb, err := badger.Open(badgerOptions(dir, o))
	if err != nil {
		return nil, translate(err)
	}
	// Stay within Badger's transaction limits whatever a batch holds:
	// 3 entries per message (message, idempotency key, meta), the trims'
	// deletes and metas, and the last channel id.
	if o.MaxBatchBytes+trimBytes+lastIDCost >= bdb.MaxBatchSize() ||
		int64(3*o.MaxBatchEntries+trimBytes/deleteCost+1) >= bdb.MaxBatchCount() {
		bdb.Close()
		return nil, fmt.Errorf("%w: batch caps %d bytes, %d entries exceed Badger's transaction limits (%d bytes, %d entries)",
			ErrInvalid, o.MaxBatchBytes, o.MaxBatchEntries, bdb.MaxBatchSize(), bdb.MaxBatchCount())
	}
	db := &DB{
		opts:   o,
		log:    log,
		bdb:    bdb,
		heads:  make(map[string]*head),
		queue:  make(chan *appendOp, 1024),
		trims:  make(chan *trim, retentionPage),
		commit: (*badger.Txn).CommitWith,
		idem:   newIdemFilter(o.IdempotencyTTL, o.idemHash),
	}
	if err := bdb.View(func(txn *badger.Txn) error {
		item, err := txn.Get(lastIDKey)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) (err error) {
			db.writer.lastID, err = decodeUint64(v)
			return err
		})
	}); err != nil {
		bdb.Close()
		return nil, translate(err)
	}
	db.ctx, db.cancel = context.WithCancel(context.Background())
	db.wg.Go(db.runWriter)
	db.wg.Go(db.scanIdem)
	if o.RetentionInterval > 0 && (o.MaxMessages > 0 || o.MaxAge > 0) {
		db.wg.Go(func() { db.every(o.RetentionInterval, db.retain) })
	}
	if o.GCInterval > 0 && !o.InMemory {
		db.wg.Go(func() { db.every(o.GCInterval, db.gcValueLog) })
	}
	return db, nil
}

// Close stops the goroutines, fails the Appends still queued with ErrClosed
// and closes Badger. Later calls of any method return errors wrapping
// ErrClosed; calling Close again returns the first call's result.
func (db *DB) Close() error {
	db.closeOnce.Do(func() {
		db.cancel()
		db.closeMu.Lock() // waits for the calls using Badger
		db.closed = true
		db.closeMu.Unlock()
		db.wg.Wait()
		for {
			select {
			case op := <-db.queue:
				op.finish(ErrClosed)
				continue
			default:
			}
			break
		}
		db.closeErr = translate(db.bdb.Close())
	})
	return db.closeErr
}

// enter checks that db is open and holds it open until the returned
// leave is called.
func (db *DB) enter() (leave func(), err error) {
	db.closeMu.RLock()
	if db.closed {
		db.closeMu.RUnlock()
		return nil, ErrClosed
	}
	return db.closeMu.RUnlock, nil
}

// translate maps Badger's errors to the store's sentinels.
func translate(err error) error {
	switch {
	case err == nil, errors.Is(err, ErrClosed), errors.Is(err, ErrUnavailable),
		errors.Is(err, ErrInvalid), errors.Is(err, ErrTooLarge),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, badger.ErrDBClosed), errors.Is(err, badger.ErrBlockedWrites):
		return fmt.Errorf("%w: %w", ErrClosed, err)
	default:
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
}

// lookup returns channel's head, or nil if the channel has never stored a
// message. txn is the writer's transaction, or nil for a read of its own.
func (db *DB) lookup(channel string, txn *badger.Txn) (*head, error) {
	db.mu.RLock()
	h := db.heads[channel]
	db.mu.RUnlock()
	if h != nil {
		return h, nil
	}
	get := func(txn *badger.Txn) error {
		item, err := txn.Get(metaKey(channel))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			m, err := decodeMeta(v)
			h = newHead(channel, m)
			return err
		})
	}
	var err error
	if txn != nil {
		err = get(txn)
	} else {
		err = db.bdb.View(get)
	}
	if err != nil || h == nil {
		return nil, err
	}
	// Only the writer commits metas, and it caches a head before committing
	// it: a head cached meanwhile is at least as new as the one read here.
	db.mu.Lock()
	defer db.mu.Unlock()
	if cached := db.heads[channel]; cached != nil {
		return cached, nil
	}
	db.heads[channel] = h
	return h, nil
}

// Bounds returns channel's epoch, first retained and last committed seq;
// {Epoch: 0, First: 1, Last: 0} for a channel that never stored a message.
func (db *DB) Bounds(ctx context.Context, channel string) (Bounds, error) {
	if err := ctx.Err(); err != nil {
		return Bounds{}, err
	}
	leave, err := db.enter()
	if err != nil {
		return Bounds{}, err
	}
	defer leave()
	h, err := db.lookup(channel, nil)
	if err != nil || h == nil {
		return Bounds{First: 1}, translate(err)
	}
	db.mu.RLock()
	defer db.mu.RUnlock()
	return Bounds{Epoch: h.epoch, First: h.first, Last: h.last}, nil
}

// Range returns channel's retained messages with from <= seq <= to, in seq
// order, at most limit (which must be positive) of them. A message that
// retention removes while Range runs may be missing from the front.
func (db *DB) Range(ctx context.Context, channel string, from, to uint64, limit int) ([]Message, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("%w: limit %d", ErrInvalid, limit)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	leave, err := db.enter()
	if err != nil {
		return nil, err
	}
	defer leave()
	h, err := db.lookup(channel, nil)
	if err != nil || h == nil {
		return nil, translate(err)
	}
	// Read the committed bounds before taking the snapshot, so that every
	// seq up to last is in it.
	db.mu.RLock()
	from, to = max(from, h.first), min(to, h.last)
	db.mu.RUnlock()
	if from > to {
		return nil, nil
	}
	msgs := make([]Message, 0, min(uint64(limit), to-from+1, 1024))
	txn := db.bdb.NewTransaction(false)
	defer txn.Discard()
	it := txn.NewIterator(badger.IteratorOptions{Prefix: msgPrefix(h.id)})
	defer it.Close()
	for it.Seek(appendMsgKey(nil, h.id, from)); it.Valid() && len(msgs) < limit; it.Next() {
		item := it.Item()
		seq := msgKeySeq(item.Key())
		if seq > to {
			break
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return nil, translate(err)
		}
		m := Message{Channel: channel, Epoch: h.epoch, Seq: seq}
		if err := decodeMessage(v, &m); err != nil {
			return nil, fmt.Errorf("%s seq %d: %w", channel, seq, err)
		}
		msgs = append(msgs, m)
	}
	return msgs, nil
}

// cursorsPerTxn bounds a transaction of SetCursors: at the longest names
// (2 x MaxNameLen per key) 1000 cursors are ~2 MB, well inside the batch
// Badger accepts with its default 64 MB memtable.
const cursorsPerTxn = 1000

// SetCursors records, for each cursor, that its user has handled its
// channel up to its position. Within one epoch it never moves a cursor
// backwards; a different epoch replaces it. The cursors are written in as
// few durable commits as Badger allows (one per cursorsPerTxn), which is
// why the server saves the acks of an interval with one call.
func (db *DB) SetCursors(ctx context.Context, cursors []Cursor) error {
	for _, c := range cursors {
		if err := checkCursorNames(c.User, c.Channel); err != nil {
			return err
		}
	}
	leave, err := db.enter()
	if err != nil {
		return err
	}
	defer leave()
	for chunk := range slices.Chunk(cursors, cursorsPerTxn) {
		if err := db.setCursors(ctx, chunk); err != nil {
			return err
		}
	}
	return nil
}

// setCursors writes cursors in one transaction.
func (db *DB) setCursors(ctx context.Context, cursors []Cursor) error {
	set := func(txn *badger.Txn) error {
		for _, c := range cursors {
			if err := setCursor(txn, c); err != nil {
				return err
			}
		}
		return nil
	}
	// Concurrent writes of one cursor conflict; every round, one wins.
	var err error
	for range 16 {
		if err := ctx.Err(); err != nil {
			return err
		}
		err = db.bdb.Update(set)
		if !errors.Is(err, badger.ErrConflict) {
			break
		}
	}
	return translate(err)
}

// setCursor moves c's cursor to c.Pos in txn, unless it covers it already.
func setCursor(txn *badger.Txn, c Cursor) error {
	key := cursorKey(c.User, c.Channel)
	item, err := txn.Get(key)
	if err == nil {
		var cur Position
		if err := item.Value(func(v []byte) (err error) {
			cur, err = decodePosition(v)
			return err
		}); err != nil {
			return err
		}
		if cur.Covers(c.Pos) {
			return nil
		}
	} else if !errors.Is(err, badger.ErrKeyNotFound) {
		return err
	}
	return txn.Set(key, encodePosition(c.Pos))
}

// Cursor returns user's position on channel, zero if none was set.
func (db *DB) Cursor(ctx context.Context, user, channel string) (Position, error) {
	if err := checkCursorNames(user, channel); err != nil {
		return Position{}, err
	}
	if err := ctx.Err(); err != nil {
		return Position{}, err
	}
	leave, err := db.enter()
	if err != nil {
		return Position{}, err
	}
	defer leave()
	var pos Position
	err = db.bdb.View(func(txn *badger.Txn) error {
		item, err := txn.Get(cursorKey(user, channel))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) (err error) {
			pos, err = decodePosition(v)
			return err
		})
	})
	return pos, translate(err)
}

func checkCursorNames(user, channel string) error {
	if user == "" || channel == "" || len(user) > MaxNameLen || len(channel) > MaxNameLen {
		return fmt.Errorf("%w: user and channel must have 1 to %d bytes", ErrInvalid, MaxNameLen)
	}
	return nil
}

type watcher struct {
	fn      func([]Message)
	stopped atomic.Bool
}

// Watch calls fn, on the writer goroutine, with the messages of every
// committed batch (duplicates excluded), in commit order, once they are
// visible to Bounds and Range and before their Appends return. fn must not
// block or call Append or RunRetention (they wait for the writer), and must
// treat the slice and its Data as read-only: they are shared with other
// watchers. A panic in fn is recovered and logged. stop may be called from
// fn; a call already running on the writer goroutine is not waited for.
func (db *DB) Watch(fn func([]Message)) (stop func()) {
	w := &watcher{fn: fn}
	db.watchMu.Lock()
	db.setWatchers(func(ws []*watcher) []*watcher { return append(ws, w) })
	db.watchMu.Unlock()
	return func() {
		if w.stopped.Swap(true) {
			return
		}
		db.watchMu.Lock()
		db.setWatchers(func(ws []*watcher) []*watcher {
			out := make([]*watcher, 0, len(ws))
			for _, x := range ws {
				if x != w {
					out = append(out, x)
				}
			}
			return out
		})
		db.watchMu.Unlock()
	}
}

// setWatchers replaces the watcher list with edit's copy; db.watchMu held.
func (db *DB) setWatchers(edit func([]*watcher) []*watcher) {
	var ws []*watcher
	if p := db.watchers.Load(); p != nil {
		ws = append(ws, (*p)...)
	}
	ws = edit(ws)
	db.watchers.Store(&ws)
}

func (db *DB) notify(msgs []Message) {
	p := db.watchers.Load()
	if p == nil || len(msgs) == 0 {
		return
	}
	for _, w := range *p {
		if !w.stopped.Load() {
			db.call(w.fn, msgs)
		}
	}
}

func (db *DB) call(fn func([]Message), msgs []Message) {
	defer func() {
		if r := recover(); r != nil {
			db.log.Error("watch callback panicked", "panic", r)
		}
	}()
	fn(msgs)
}
