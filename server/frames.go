package server

import (
	"io"

	"github.com/quicpush/quicpush/stream"
	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// Why a stream's reader handles each frame on a fresh goroutine.
//
// Every connection parks a goroutine on its control stream and one on each
// session stream for its whole life, blocked in quic-go's Stream.Read. A
// goroutine starts with a 2 KiB stack, grows it when a call chain needs
// more, and keeps the growth: the GC halves a stack only while less than a
// quarter of it is in use, counting 800 bytes of guard space, so a 4 KiB
// stack shrinks only under 224 bytes in use, and the quic-go and runtime
// frames under a blocked Read alone take about 600. Waiting for a frame fits
// in 2 KiB; decoding and handling one (the store, the hub, writes) does not.
// So the reader only waits for a frame's first byte, with small frames
// between the goroutine's root and Stream.Read, and each frame is read and
// handled on a goroutine of its own that takes its stack with it when it
// ends: 2 KiB per idle stream instead of 4 to 8, for well under a
// microsecond per received frame (a goroutine start and a hand-off).

// readFrames reads st's frames one at a time and runs handle on each, in
// order, each on a fresh goroutine while this one waits (see above). It
// returns io.EOF at a clean end of stream between frames, or the first
// error of a read or of handle.
func readFrames(st io.Reader, handle func(*pb.Frame) error) error {
	l := &frameLoop{primed: primedReader{r: st}, handle: handle, done: make(chan error, 1)}
	l.r = stream.NewReader(&l.primed, 0)
	next := l.next // one method value for every frame
	for {
		if err := l.primed.wait(); err != nil {
			return err
		}
		go next()
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

// onFreshStack runs fn on a new goroutine and waits for it, so that the
// stack fn needs leaves with that goroutine instead of staying with a
// long-lived caller.
func onFreshStack(fn func() error) error {
	done := make(chan error, 1)
	go func() { done <- fn() }()
	return <-done
}
