package client

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/stream"
)

// finStream is a session stream's send side that records whether a write
// came after its FIN.
type finStream struct {
	mu          sync.Mutex
	fin         bool
	writesAfter int
}

func (f *finStream) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fin {
		f.writesAfter++
	}
	return len(p), nil
}

func (f *finStream) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fin = true
	return nil
}

// A handler that returns after finish ended the session stream (the server
// asked the client to go: handlers run on until the connection closes)
// records an ack the closed stream cannot carry: it stays pending for the
// next connection's resume instead of being dropped, and nothing is written
// after the FIN.
func TestAckAfterFinishWaitsForNextConnection(t *testing.T) {
	conn := &connection{params: params{ackDelay: time.Millisecond}}
	st := &finStream{}
	s := newSession(nil, "s")
	s.conn, s.send, s.readDone = conn, stream.NewSender(st, nil, nil), make(chan struct{})
	s.ack("room/a", Position{Epoch: 1, Seq: 6})
	s.finish(conn) // the goodbye: last acks, then FIN

	s.ack("room/a", Position{Epoch: 1, Seq: 7})
	require.Eventually(t, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return !s.ackArmed // flushAcks has run
	}, 10*time.Second, time.Millisecond)

	s.mu.Lock()
	pending := s.acks["room/a"]
	frames := s.ackFrames() // what resume sends first on the next connection
	s.mu.Unlock()
	require.Equal(t, Position{Epoch: 1, Seq: 7}, pending, "the ack is kept for the next connection")
	require.Len(t, frames, 1)
	require.Equal(t, uint64(7), frames[0].GetAck().GetSeq())
	st.mu.Lock()
	defer st.mu.Unlock()
	require.True(t, st.fin)
	require.Zero(t, st.writesAfter, "nothing after the FIN")
}
