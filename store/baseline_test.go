package store

import (
	"io"
	"log/slog"
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
