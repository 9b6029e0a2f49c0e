package stream

import (
	"errors"
	"sync"
	"sync/atomic"

	"github.com/quic-go/quic-go"

	"github.com/quicpush/quicpush/stream/quicpushpb"
)

// ErrQueueFull is returned by Sender.Send when the connection's send budget
// is exhausted: the peer is not reading fast enough.
var ErrQueueFull = errors.New("quicpush: send queue full")

// Budget bounds the bytes queued by all the Senders of one connection.
type Budget struct {
	used  atomic.Int64
	limit int64
}

// NewBudget returns a budget of limit bytes.
func NewBudget(limit int64) *Budget { return &Budget{limit: limit} }

// Used returns the bytes queued now.
func (b *Budget) Used() int64 { return b.used.Load() }

// SendStream is what a Sender writes to: a QUIC stream.
type SendStream interface {
	Write(p []byte) (int, error)
	Close() error
}

// ErrSenderClosed is returned by Send after Close.
var ErrSenderClosed = errors.New("quicpush: sender closed")

// tryWriter is implemented by quic-go streams: a write that queues the
// whole slice without blocking, or nothing.
type tryWriter interface {
	TryWriteAll(p []byte) error
}

// Sender queues frames for one stream without ever blocking its caller, so
// that one stream held up by flow control holds up nobody else. Bytes go
// straight into the stream while it has flow-control credit (no goroutine
// hand-off); otherwise they queue, within the connection's Budget, for a
// goroutine that exists only while the queue is non-empty.
type Sender struct {
	st     SendStream
	try    tryWriter
	budget *Budget

	mu       sync.Mutex
	pending  []byte
	inflight int // bytes of the chunk the flusher is writing
	spare    []byte
	flushing bool
	closing  bool
	err      error
	onError  func(error)
	onIdle   func()
}

// NewSender returns a Sender writing to st. onError (may be nil) is called
// once, on a goroutine of its own or the flushing one, when a write fails.
func NewSender(st SendStream, budget *Budget, onError func(error)) *Sender {
	s := &Sender{st: st, budget: budget, onError: onError}
	s.try, _ = st.(tryWriter)
	return s
}

// Send queues b (one or more encoded frames; the Sender keeps no reference
// to b). It returns ErrQueueFull when the budget is exhausted, and the
// stream's error once a write has failed.
func (s *Sender) Send(b []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	if s.closing {
		return ErrSenderClosed
	}
	if !s.flushing && s.try != nil {
		err := s.try.TryWriteAll(b)
		if err == nil {
			return nil
		}
		if !errors.Is(err, quic.ErrWouldBlock) {
			s.err = err
			if s.onError != nil {
				go s.onError(err) // not under the caller's locks
			}
			return err
		}
	}
	if s.budget != nil && s.budget.used.Add(int64(len(b))) > s.budget.limit {
		s.budget.used.Add(-int64(len(b)))
		return ErrQueueFull
	}
	s.pending = append(s.pending, b...)
	if !s.flushing {
		s.flushing = true
		go s.flush()
	}
	return nil
}

// SendFrames encodes frames into one write.
func (s *Sender) SendFrames(frames ...*quicpushpb.Frame) error {
	var b []byte
	for _, f := range frames {
		var err error
		if b, err = AppendFrame(b, f); err != nil {
			return err
		}
	}
	return s.Send(b)
}

// Close closes the stream's write side (FIN) once everything queued has
// been written. Calling it more than once is harmless.
func (s *Sender) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing || s.err != nil {
		return
	}
	s.closing = true
	if !s.flushing {
		s.st.Close() // otherwise the flusher closes it when done
	}
}

// OnIdle sets f to be called, from the flushing goroutine and without the
// Sender's lock, each time its queue has drained: the moment to send what
// waits for a free stream (droppable messages). Set it before any Send.
func (s *Sender) OnIdle(f func()) { s.onIdle = f }

// Queued returns the bytes waiting for flow control, the chunk being
// written included (0 when the stream takes writes at once).
func (s *Sender) Queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending) + s.inflight
}

// Idle reports whether nothing is queued.
func (s *Sender) Idle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.flushing
}

func (s *Sender) flush() {
	for {
		s.mu.Lock()
		if len(s.pending) == 0 {
			s.flushing = false
			if s.closing {
				s.st.Close()
			}
			s.mu.Unlock()
			if s.onIdle != nil {
				s.onIdle()
			}
			return
		}
		b := s.pending
		s.pending, s.spare = s.spare[:0], nil
		s.inflight = len(b)
		s.mu.Unlock()

		_, err := s.st.Write(b)
		if s.budget != nil {
			s.budget.used.Add(-int64(len(b)))
		}

		s.mu.Lock()
		s.inflight = 0
		if cap(b) <= 64<<10 {
			s.spare = b[:0] // keep a modest buffer for the next burst
		}
		if err != nil {
			s.err = err
			if s.budget != nil {
				s.budget.used.Add(-int64(len(s.pending)))
			}
			s.pending, s.spare, s.flushing = nil, nil, false
			s.mu.Unlock()
			if s.onError != nil {
				s.onError(err)
			}
			return
		}
		s.mu.Unlock()
	}
}
