package server

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/quicpush/quicpush/store"
)

// cursorWriter coalesces acknowledged positions so that a stream of acks
// costs one store write per interval: at most one cursor per (user,
// channel), all of them in one call.
type cursorWriter struct {
	store    Store
	interval time.Duration
	log      *slog.Logger

	mu    sync.Mutex
	dirty map[cursorKey]store.Position
	// writing are the positions a flush is writing: still to be counted by
	// cursor until the store has them.
	writing map[cursorKey]store.Position
}

type cursorKey struct{ user, channel string }

func newCursorWriter(st Store, interval time.Duration, log *slog.Logger) *cursorWriter {
	return &cursorWriter{store: st, interval: interval, log: log, dirty: map[cursorKey]store.Position{}}
}

func (w *cursorWriter) set(user, channel string, pos store.Position) {
	w.mu.Lock()
	defer w.mu.Unlock()
	k := cursorKey{user, channel}
	if old, ok := w.dirty[k]; ok && old.Covers(pos) {
		return
	}
	w.dirty[k] = pos
}

// cursor returns user's acknowledged position on channel, counting acks
// not yet written to the store.
func (w *cursorWriter) cursor(ctx context.Context, user, channel string) (store.Position, error) {
	k := cursorKey{user, channel}
	w.mu.Lock()
	pending, ok := w.dirty[k]
	if !ok {
		pending, ok = w.writing[k]
	}
	w.mu.Unlock()
	stored, err := w.store.Cursor(ctx, user, channel)
	if err != nil {
		return stored, err
	}
	// A pending ack of another device may be behind the stored cursor.
	if ok && (pending.Epoch != stored.Epoch || pending.Seq > stored.Seq) {
		return pending, nil
	}
	return stored, nil
}

func (w *cursorWriter) run(ctx context.Context) {
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.flush(ctx)
		}
	}
}

func (w *cursorWriter) flush(ctx context.Context) {
	w.mu.Lock()
	dirty := w.dirty
	w.dirty, w.writing = map[cursorKey]store.Position{}, dirty
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		w.writing = nil
		w.mu.Unlock()
	}()
	if len(dirty) == 0 {
		return
	}
	cursors := make([]store.Cursor, 0, len(dirty))
	for k, pos := range dirty {
		cursors = append(cursors, store.Cursor{User: k.user, Channel: k.channel, Pos: pos})
	}
	// One call: the whole interval's acks cost a commit (an fsync), not
	// one each.
	if err := w.store.SetCursors(ctx, cursors); err != nil {
		if ctx.Err() == nil { // else: closing, and Close flushes once more
			w.log.Warn("cannot save cursors, will retry", "cursors", len(cursors), "err", err)
		}
		w.mu.Lock()
		for k, pos := range dirty {
			if _, newer := w.dirty[k]; !newer {
				w.dirty[k] = pos
			}
		}
		w.mu.Unlock()
	}
}
