package server

import (
	"context"
	"io"
	"sync"
	"sync/atomic"

	"github.com/quicpush/quicpush/stream"
	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// Why a stream's reader hands each frame to another goroutine.
//
// Every connection parks a goroutine on its control stream and one on each
// session stream for its whole life, blocked in quic-go's Stream.Read. A
// goroutine starts with a 2 KiB stack, grows it when a call chain needs
// more, and keeps the growth: the GC halves a stack only while less than a
// quarter of it is in use, counting 800 bytes of guard space, so a 4 KiB
// stack shrinks only under 224 bytes in use, and the quic-go and runtime
// frames under a blocked Read alone take about 600. Waiting for a frame fits
// in 2 KiB; decoding and handling one (protobuf, the store, the hub,
// writes) does not. So the reader only waits for a frame's first byte, with
// small frames between its goroutine's root and Stream.Read, and each frame
// is read and handled by a worker of the server's stackPool: 2 KiB per idle
// stream instead of 4 to 8. The workers are shared by every connection and
// keep their grown stacks, since a fresh goroutine per frame would grow its
// stack every time (about 2 us per frame, mostly copying stacks).

// stackPool runs calls on worker goroutines shared by every connection.
// A call goes to an idle worker, or to a new one when none is idle, so calls
// never wait for each other; a worker that finds maxIdleWorkers idle ones
// ends.
type stackPool struct {
	ctx   context.Context // ends the idle workers
	wg    *sync.WaitGroup // tracks the workers
	calls chan func()     // unbuffered: taken only by an idle worker
	idle  atomic.Int32
}

// maxIdleWorkers bounds the workers kept for the next calls (each with a
// stack of a few KiB).
const maxIdleWorkers = 64

func newStackPool(ctx context.Context, wg *sync.WaitGroup) *stackPool {
	return &stackPool{ctx: ctx, wg: wg, calls: make(chan func())}
}

// run starts call on a worker and returns.
func (p *stackPool) run(call func()) {
	select {
	case p.calls <- call:
	default:
		p.wg.Add(1)
		go p.work(call)
	}
}

func (p *stackPool) work(call func()) {
	defer p.wg.Done()
	for {
		call()
		if p.idle.Add(1) > maxIdleWorkers {
			p.idle.Add(-1)
			return
		}
		select {
		case call = <-p.calls:
			p.idle.Add(-1)
		case <-p.ctx.Done():
			p.idle.Add(-1)
			return
		}
	}
}

// do runs fn on a worker and waits for it, so that the stack fn needs is
// not kept by a long-lived caller.
func (p *stackPool) do(fn func() error) error {
	done := make(chan error, 1)
	p.run(func() { done <- fn() })
	return <-done
}

// readFrames reads st's frames one at a time and runs handle on each, in
// order, each on a worker of p while this goroutine waits (see above). It
// returns io.EOF at a clean end of stream between frames, or the first
// error of a read or of handle.
func readFrames(p *stackPool, st io.Reader, handle func(*pb.Frame) error) error {
	l := &frameLoop{primed: primedReader{r: st}, handle: handle, done: make(chan error, 1)}
	l.r = stream.NewReader(&l.primed, 0)
	next := l.next // one method value for every frame
	for {
		if err := l.primed.wait(); err != nil {
			return err
		}
		p.run(next)
		if err := <-l.done; err != nil {
			return err
		}
	}
}

// frameLoop is readFrames' state, shared with each frame's goroutine.
type frameLoop struct {
	primed primedReader
	r      *stream.Reader
	handle func(*pb.Frame) error
	done   chan error
}

// next reads the frame whose first byte arrived and handles it.
func (l *frameLoop) next() {
	f, err := l.r.ReadFrame()
	switch {
	case err == io.EOF:
		err = io.ErrUnexpectedEOF // after the frame's first byte
	case err == nil:
		err = l.handle(f)
	}
	l.done <- err
}

// primedReader gives back the byte that wait took before reading on.
type primedReader struct {
	r      io.Reader
	b      [1]byte
	primed bool
}

// wait blocks until the next byte arrives and keeps it. It is the only
// call on a reader's stack while its stream is idle, so it holds nothing.
func (p *primedReader) wait() error {
	for {
		n, err := p.r.Read(p.b[:])
		if n == 1 {
			// An error with the byte (an end of stream) comes back on
			// the next read, inside the frame.
			p.primed = true
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (p *primedReader) Read(b []byte) (int, error) {
	if !p.primed || len(b) == 0 {
		return p.r.Read(b)
	}
	b[0], p.primed = p.b[0], false
	return 1, nil
}

func (p *primedReader) ReadByte() (byte, error) {
	if p.primed {
		p.primed = false
		return p.b[0], nil
	}
	if _, err := io.ReadFull(p.r, p.b[:]); err != nil {
		return 0, err
	}
	return p.b[0], nil
}
