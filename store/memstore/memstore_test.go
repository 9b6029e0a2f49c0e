package memstore_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/server"
	"github.com/quicpush/quicpush/store"
	"github.com/quicpush/quicpush/store/memstore"
	"github.com/quicpush/quicpush/store/storetest"
)

var _ server.Store = (*memstore.Store)(nil)

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Store {
		return memstore.New(memstore.Options{
			MaxMessageSize: storetest.MaxMessageSize,
			MaxMessages:    storetest.MaxMessages,
			MaxAge:         -1,
		})
	})
}

// clock is a manual clock for Options.Now.
type clock struct{ now time.Time }

func (c *clock) Now() time.Time { return c.now }

func TestIdempotencyTTL(t *testing.T) {
	c := &clock{now: time.Unix(1000, 0)}
	s := memstore.New(memstore.Options{IdempotencyTTL: time.Minute, Now: c.Now})
	req := []store.AppendRequest{{Channel: "c", From: "u", ID: "1", Data: []byte("x")}}
	res, err := s.Append(t.Context(), req)
	require.NoError(t, err)
	require.Equal(t, uint64(1), res[0].Seq)

	c.now = c.now.Add(59 * time.Second)
	res, err = s.Append(t.Context(), req)
	require.NoError(t, err)
	require.Equal(t, store.AppendResult{Epoch: res[0].Epoch, Seq: 1, Duplicate: true}, res[0])

	c.now = c.now.Add(time.Second)
	require.NoError(t, s.RunRetention(t.Context()))
	res, err = s.Append(t.Context(), req)
	require.NoError(t, err)
	require.Equal(t, store.AppendResult{Epoch: res[0].Epoch, Seq: 2}, res[0], "the key expired")
}

func TestRetentionByAge(t *testing.T) {
	c := &clock{now: time.Unix(1000, 0)}
	s := memstore.New(memstore.Options{MaxAge: time.Minute, Now: c.Now})
	for range 3 {
		_, err := s.Append(t.Context(), []store.AppendRequest{{Channel: "c", Data: []byte("old")}})
		require.NoError(t, err)
	}
	c.now = c.now.Add(30 * time.Second)
	_, err := s.Append(t.Context(), []store.AppendRequest{{Channel: "c", Data: []byte("young")}})
	require.NoError(t, err)

	c.now = c.now.Add(31 * time.Second)
	require.NoError(t, s.RunRetention(t.Context()))
	b, err := s.Bounds(t.Context(), "c")
	require.NoError(t, err)
	require.Equal(t, store.Bounds{Epoch: b.Epoch, First: 4, Last: 4}, b)

	c.now = c.now.Add(time.Minute)
	require.NoError(t, s.RunRetention(t.Context()))
	b, err = s.Bounds(t.Context(), "c")
	require.NoError(t, err)
	require.Equal(t, store.Bounds{Epoch: b.Epoch, First: 5, Last: 4}, b, "Last is kept when nothing is retained")
	msgs, err := s.Range(t.Context(), "c", 1, 10, 10)
	require.NoError(t, err)
	require.Empty(t, msgs)
}
