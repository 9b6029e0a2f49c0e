package store

import (
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/stretchr/testify/require"
)

type record struct {
	value     []byte
	expiresAt uint64
}

// dump returns every record of the Badger store in dir.
func dump(t *testing.T, dir string) map[string]record {
	t.Helper()
	bdb, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
	require.NoError(t, err)
	defer func() { require.NoError(t, bdb.Close()) }()
	out := map[string]record{}
	require.NoError(t, bdb.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			out[string(it.Item().KeyCopy(nil))] = record{v, it.Item().ExpiresAt()}
		}
		return nil
	}))
	return out
}

// TestBaselineWritesAppendsRecords: the benchmark's floor stores exactly
// the keys and values Append stores for the same requests (epochs aside,
// which are random), so that the two are compared on the same bytes.
func TestBaselineWritesAppendsRecords(t *testing.T) {
	at := time.Unix(1_700_000_000, 123)
	opts := Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), RetentionInterval: -1,
		GCInterval: -1, Now: func() time.Time { return at }}
	calls := [][]AppendRequest{
		{{Channel: "a", From: "u", ID: "1", Data: []byte("one")}, {Channel: "a", Data: []byte("two")},
			{Channel: "bb", From: "v", ID: "x", Data: []byte("three")}, {Channel: "a", From: "u", ID: "2"}},
		{{Channel: "bb", From: "", ID: "y", Data: make([]byte, 300)}},
		{{Channel: "c", From: "w", ID: "z", Data: []byte("four")}, {Channel: "a", Data: []byte("five")}},
	}

	dbDir, blDir := t.TempDir(), t.TempDir()
	db, err := Open(dbDir, opts)
	require.NoError(t, err)
	for _, reqs := range calls {
		_, err := db.Append(t.Context(), reqs)
		require.NoError(t, err)
	}
	require.NoError(t, db.Close())
	bl, err := OpenBaseline(blDir, opts)
	require.NoError(t, err)
	for _, reqs := range calls {
		require.NoError(t, bl.Append(reqs))
	}
	require.NoError(t, bl.Close())

	want, got := dump(t, dbDir), dump(t, blDir)
	require.Len(t, want, 1+3+7+5) // last id, 3 metas, 7 messages, 5 idempotency keys
	require.Equal(t, len(want), len(got))
	for k, w := range want {
		g, ok := got[k]
		require.True(t, ok, "key %q missing", k)
		if k[0] == prefixMeta {
			wm, err := decodeMeta(w.value)
			require.NoError(t, err)
			gm, err := decodeMeta(g.value)
			require.NoError(t, err)
			require.NotZero(t, gm.epoch)
			wm.epoch, gm.epoch = 0, 0
			require.Equal(t, wm, gm, "meta %q", k)
			continue
		}
		require.Equal(t, w.value, g.value, "value of %q", k)
		if w.expiresAt == 0 {
			require.Zero(t, g.expiresAt, "TTL of %q", k)
		} else {
			require.InDelta(t, w.expiresAt, g.expiresAt, 5, "TTL of %q", k)
		}
	}
}

// TestBaselineConcurrent: concurrent calls are group-committed, every
// message lands once with its channel's next seq, and a closed Baseline
// refuses calls.
func TestBaselineConcurrent(t *testing.T) {
	dir := t.TempDir()
	bl, err := OpenBaseline(dir, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	const callers, calls, per = 8, 20, 5
	var wg sync.WaitGroup
	for g := range callers {
		wg.Go(func() {
			for k := range calls {
				reqs := make([]AppendRequest, per)
				for j := range reqs {
					reqs[j] = AppendRequest{Channel: "c" + strconv.Itoa(g%2), From: "u",
						ID: fmt.Sprint(g, "-", k, "-", j), Data: []byte("x")}
				}
				if err := bl.Append(reqs); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	require.NoError(t, bl.Close())
	require.ErrorIs(t, bl.Append([]AppendRequest{{Channel: "c0"}}), ErrClosed)
	require.NoError(t, bl.Close())

	recs := dump(t, dir)
	seqs := map[uint64][]uint64{}
	metas := map[uint64]meta{}
	idem := 0
	for k, r := range recs {
		switch k[0] {
		case prefixMessage:
			id := binary.BigEndian.Uint64([]byte(k[1:9]))
			seqs[id] = append(seqs[id], msgKeySeq([]byte(k)))
		case prefixIdem:
			idem++
		case prefixMeta:
			m, err := decodeMeta(r.value)
			require.NoError(t, err)
			metas[m.id] = m
		}
	}
	require.Equal(t, callers*calls*per, idem)
	require.Len(t, seqs, 2)
	for id, s := range seqs {
		slices.Sort(s)
		for i, seq := range s {
			require.EqualValues(t, i+1, seq, "channel %d", id)
		}
		require.EqualValues(t, len(s), metas[id].last, "channel %d", id)
	}
}
