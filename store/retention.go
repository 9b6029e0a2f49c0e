package store

import (
	"context"
	"errors"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// retentionPage is how many channels retention reads, then trims together.
const retentionPage = 256

// RunRetention applies MaxMessages and MaxAge to every channel now, and
// returns once done: each channel's First moves past the messages dropped
// (keeping the newest MaxMessages and those younger than MaxAge), and they
// are deleted. Last never changes. It runs every RetentionInterval; call it
// to not wait, e.g. in tests.
func (db *DB) RunRetention(ctx context.Context) error {
	if db.opts.MaxMessages < 0 && db.opts.MaxAge < 0 {
		leave, err := db.enter()
		if err == nil {
			leave()
		}
		return err
	}
	var cutoff time.Time
	if db.opts.MaxAge > 0 {
		cutoff = db.opts.Now().Add(-db.opts.MaxAge)
	}
	start := []byte{prefixMeta}
	for {
		var page []*trim
		var next []byte
		err := db.view(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixMeta}})
			defer it.Close()
			for it.Seek(start); it.Valid(); it.Next() {
				if len(page) == retentionPage {
					next = it.Item().KeyCopy(nil)
					return nil
				}
				item := it.Item()
				var m meta
				if err := item.Value(func(v []byte) (err error) {
					m, err = decodeMeta(v)
					return err
				}); err != nil {
					return err
				}
				first, err := db.retainFrom(txn, m, cutoff)
				if err != nil {
					return err
				}
				if first > m.first {
					page = append(page, &trim{channel: string(item.Key()[1:]), first: first, done: make(chan error, 1)})
				}
			}
			return nil
		})
		if err == nil {
			err = db.trimAll(ctx, page)
		}
		if err != nil || next == nil {
			return err
		}
		start = next
	}
}

// retainFrom returns the first seq of m's channel that retention keeps.
func (db *DB) retainFrom(txn *badger.Txn, m meta, cutoff time.Time) (uint64, error) {
	first := m.first
	if n := db.opts.MaxMessages; n > 0 && m.last >= first && m.last-first >= uint64(n) {
		first = m.last - uint64(n) + 1
	}
	if cutoff.IsZero() || first > m.last {
		return first, nil
	}
	// Seqs follow commit time: stop at the first message young enough.
	it := txn.NewIterator(badger.IteratorOptions{Prefix: msgPrefix(m.id)})
	defer it.Close()
	for it.Seek(appendMsgKey(nil, m.id, first)); it.Valid(); it.Next() {
		item := it.Item()
		seq := msgKeySeq(item.Key())
		if seq > m.last {
			break
		}
		var t time.Time
		if err := item.Value(func(v []byte) (err error) {
			t, err = messageTime(v)
			return err
		}); err != nil {
			return 0, err
		}
		if !t.Before(cutoff) {
			break
		}
		first = seq + 1
	}
	return first, nil
}

// trimAll hands trims to the writer, which commits them with the appends,
// and waits for all of them.
func (db *DB) trimAll(ctx context.Context, trims []*trim) error {
	for _, t := range trims {
		select {
		case db.trims <- t:
		case <-ctx.Done():
			return ctx.Err()
		case <-db.ctx.Done():
			return ErrClosed
		}
	}
	var errs []error
	for _, t := range trims {
		select {
		case err := <-t.done:
			errs = append(errs, err)
		case <-ctx.Done():
			return ctx.Err()
		case <-db.ctx.Done():
			return ErrClosed
		}
	}
	return errors.Join(errs...)
}

// view runs fn in a read transaction, with db held open.
func (db *DB) view(fn func(txn *badger.Txn) error) error {
	leave, err := db.enter()
	if err != nil {
		return err
	}
	defer leave()
	return translate(db.bdb.View(fn))
}

// every calls f every d until Close.
func (db *DB) every(d time.Duration, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-db.ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}

func (db *DB) retain() {
	if err := db.RunRetention(db.ctx); err != nil && db.ctx.Err() == nil {
		db.log.Error("retention failed", "err", err)
	}
}

// gcValueLog rewrites value-log files until none is worth it. Messages are
// small and live in the LSM tree, so this mostly finds nothing; their space
// comes back through compaction.
func (db *DB) gcValueLog() {
	for db.ctx.Err() == nil {
		err := db.bdb.RunValueLogGC(0.5)
		if err == nil {
			continue
		}
		if !errors.Is(err, badger.ErrNoRewrite) && !errors.Is(err, badger.ErrRejected) {
			db.log.Warn("value-log GC failed", "err", err)
		}
		return
	}
}
