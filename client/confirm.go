package client

import (
	"context"
	"sync"
	"time"

	"github.com/quicpush/quicpush/stream"
	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// ConfirmOptions ask the server to tell the publisher which of the
// channel's subscribers have handled a reliable message: its recipients are
// the users (but the publisher) with a session subscribed to the channel
// when the server took the publish; a recipient confirms when one of its
// clients acknowledged the message, which it does after its handler
// returned (docs/PROTOCOL.md §16.1).
type ConfirmOptions struct {
	// Deadline is when, counted from the acknowledgement, the server
	// reports the recipients still missing. Required: 1 ms up to the
	// server's maximum (10 min by default). The server goes on tracking the
	// message after it for a while (2 min by default), so late
	// confirmations still arrive.
	Deadline time.Duration
	// OnUpdate, if set, is called with every change, in order, on the
	// session's reader: it must return quickly.
	OnUpdate func(ConfirmStatus)
}

// ConfirmStatus is where a confirmation stands.
type ConfirmStatus struct {
	Channel   string
	Epoch     uint64
	Seq       uint64
	Confirmed int
	Total     int
	// Missing, in a report, lists the first recipients that have not
	// confirmed (sorted, at most 100); MissingMore counts the others.
	Missing     []string
	MissingMore int
	// Report: this status is the server's report at the deadline (or the
	// final one); Missing is set.
	Report bool
	// Final: no update follows. Either all confirmed, or the server stopped
	// tracking the message, or Lost.
	Final bool
	// Lost: the connection broke and the server forgot the confirmation.
	// Publishing the message again with the same ID and ConfirmOptions
	// stores nothing new and tracks it again (acknowledgements made in
	// between are read from the recipients' cursors).
	Lost bool
}

// Complete reports whether every recipient confirmed.
func (st ConfirmStatus) Complete() bool { return st.Confirmed == st.Total && !st.Lost }

// Confirmation follows the per-recipient confirmation of one published
// message. It is safe for concurrent use.
type Confirmation struct {
	opts ConfirmOptions

	updating sync.Mutex // one update at a time, OnUpdate included
	mu       sync.Mutex
	status   ConfirmStatus
	changed  chan struct{} // closed and replaced at every change
	reported chan struct{} // closed at the first report or the final status
	done     chan struct{} // closed at the final status
}

func newConfirmation(opts ConfirmOptions, res PublishResult) *Confirmation {
	return &Confirmation{opts: opts, status: ConfirmStatus{Channel: res.Channel, Epoch: res.Epoch, Seq: res.Seq},
		changed: make(chan struct{}), reported: make(chan struct{}), done: make(chan struct{})}
}

// Status returns the latest status.
func (c *Confirmation) Status() ConfirmStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

// Changed returns a channel closed at the next change of the status.
func (c *Confirmation) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

// Report waits for the server's report at the deadline (or for every
// recipient to confirm before it, or the confirmation to be lost).
func (c *Confirmation) Report(ctx context.Context) (ConfirmStatus, error) {
	select {
	case <-c.reported:
		return c.Status(), nil
	case <-ctx.Done():
		return c.Status(), ctx.Err()
	}
}

// Wait waits until no update follows: every recipient confirmed, the
// server stopped tracking the message, or the confirmation was lost.
func (c *Confirmation) Wait(ctx context.Context) (ConfirmStatus, error) {
	select {
	case <-c.done:
		return c.Status(), nil
	case <-ctx.Done():
		return c.Status(), ctx.Err()
	}
}

// update applies f to the status, calls OnUpdate, then wakes whoever
// waits: a caller woken by the final status has seen its OnUpdate done.
func (c *Confirmation) update(f func(*ConfirmStatus)) {
	c.updating.Lock()
	defer c.updating.Unlock()
	c.mu.Lock()
	if c.status.Final {
		c.mu.Unlock()
		return
	}
	f(&c.status)
	st := c.status
	c.mu.Unlock()
	if c.opts.OnUpdate != nil {
		c.opts.OnUpdate(st)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	close(c.changed)
	c.changed = make(chan struct{})
	if st.Report || st.Final {
		select {
		case <-c.reported:
		default:
			close(c.reported)
		}
	}
	if st.Final {
		close(c.done)
	}
}

func (s *Session) onConfirmProgress(p *pb.ConfirmProgress) {
	c := s.confirmation(p.RequestId, p.Final)
	if c == nil {
		return
	}
	c.update(func(st *ConfirmStatus) {
		st.Confirmed, st.Total, st.Final = int(p.Confirmed), int(p.Total), p.Final
		if st.Complete() {
			st.Missing, st.MissingMore = nil, 0
		}
	})
}

func (s *Session) onConfirmReport(r *pb.ConfirmReport) {
	c := s.confirmation(r.RequestId, r.Final)
	if c == nil {
		return
	}
	c.update(func(st *ConfirmStatus) {
		st.Confirmed, st.Total, st.Final, st.Report = int(r.Confirmed), int(r.Total), r.Final, true
		st.Missing, st.MissingMore = r.Missing, int(r.MissingMore)
	})
}

// confirmation finds the confirmation of a publish; final forgets it.
func (s *Session) confirmation(requestID uint64, final bool) *Confirmation {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.confirms[requestID]
	if final {
		delete(s.confirms, requestID)
	}
	return c
}

// loseConfirmations ends every confirmation of the session: the connection
// they were tracked on is gone. s.mu held.
func (s *Session) loseConfirmations() []*Confirmation {
	lost := make([]*Confirmation, 0, len(s.confirms))
	for id, c := range s.confirms {
		lost = append(lost, c)
		delete(s.confirms, id)
	}
	return lost
}

func markLost(cs []*Confirmation) {
	for _, c := range cs {
		c.update(func(st *ConfirmStatus) { st.Final, st.Lost = true, true })
	}
}

// checkConfirm validates ConfirmOptions before anything is sent.
func checkConfirm(opts PublishOptions) error {
	switch {
	case opts.Confirm == nil:
		return nil
	case opts.Droppable:
		return stream.Errorf(stream.BadRequest, "only reliable messages can be confirmed")
	case opts.Confirm.Deadline < time.Millisecond || opts.Confirm.Deadline/time.Millisecond > 1<<32-1:
		return stream.Errorf(stream.InvalidRange, "confirmation deadline %v: must be at least 1ms", opts.Confirm.Deadline)
	}
	return nil
}
