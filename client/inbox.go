package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/quicpush/quicpush/stream"
	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// Offline messages (docs/PROTOCOL.md §15.4): counts first, then pages.

// Waiting says how many messages of a channel wait.
type Waiting struct {
	Channel       string
	Epoch         uint64
	Head          uint64 // the channel's last seq
	FirstRetained uint64
	// After is the position counted from: this client's position (for
	// SubscribeOptions.OnWaiting), or the user's acknowledged cursor (for
	// Client.Waiting; 0 if it belongs to a lost history).
	After uint64
	// Count is how many retained messages come after After.
	Count uint64
	// PageSize is the server's offline page size.
	PageSize int
	// Err is set (and the rest zero) when Client.Waiting could not count
	// the channel: not allowed, or the store failed.
	Err error
}

// Bounds on the page sizes a server may give (Welcome).
var inboxPageLimits = [2]int{1, 10000}

func inboxPageSizes(w *pb.Welcome, d params) (page, maxPage int) {
	clamp := func(v uint32, def int) int {
		if v == 0 {
			return def
		}
		return min(max(int(v), inboxPageLimits[0]), inboxPageLimits[1])
	}
	maxPage = clamp(w.InboxMaxPageSize, d.inboxMaxPage)
	return min(clamp(w.InboxPageSize, d.inboxPage), maxPage), maxPage
}

// finished records that the handler is done with the item saving pos;
// saved says whether the position was saved (and so acknowledged).
func (ch *channel) finished(pos Position, saved bool) {
	ch.mu.Lock()
	ch.savesDone++
	if saved && !ch.observe { // an observer's position never rides on a page
		ch.handled = pos
	}
	ch.mu.Unlock()
	select {
	case ch.progress <- struct{}{}:
	default:
	}
}

// waitHandled waits until the handler has finished every message queued
// for it so far, and returns the position to acknowledge; false if the
// channel or conn ended first.
func (ch *channel) waitHandled(conn *connection) (Position, bool) {
	for {
		ch.mu.Lock()
		done, pos := ch.savesDone == ch.saves, ch.handled
		ch.mu.Unlock()
		if done {
			return pos, true
		}
		select {
		case <-ch.progress:
		case <-ch.stop:
			return pos, false
		case <-conn.done:
			return pos, false
		}
	}
}

// pullPages is a paged subscription's fetch: one page after from-1, asked
// for once the handler has finished everything before it, so that the
// request carries the acknowledgement of the page before and only one page
// is held in memory. The channel pulls the next page when this one ends.
func (ch *channel) pullPages(conn *connection, epoch, from, _ uint64) {
	s := ch.s
	ack, ok := ch.waitHandled(conn) // everything up to from-1 is queued
	if !ok {
		ch.onRepairEnd(nil)
		return
	}
	s.mu.Lock()
	if p, pending := s.acks[ch.name]; pending && p.Epoch == ack.Epoch && p.Seq <= ack.Seq {
		delete(s.acks, ch.name) // it rides on the request instead
	}
	limit := ch.params.inboxPage
	s.mu.Unlock()
	s.c.stats.pages.Add(1)
	var end *pb.InboxPage
	err := readPage(s.c.ctx, conn, &pb.InboxPull{Channel: ch.name, Epoch: epoch, After: from - 1, Limit: uint32(limit), AckEpoch: ack.Epoch, AckSeq: ack.Seq},
		func(p *pb.Push) { ch.onPush(p, true) }, func(p *pb.InboxPage) { end = p })
	if err != nil {
		var pe *stream.Error
		switch {
		case errors.As(err, &pe) && pe.Code == stream.WrongEpoch:
			conn.close(stream.NoError, "") // a fresh subscribe reports the reset
		case errors.As(err, &pe) && pe.Code == stream.Forbidden:
			s.refused(ch.name, pe)
		}
		s.c.log.Debug("page failed", "channel", ch.name, "after", from-1, "err", err)
		ch.onRepairEnd(nil)
		return
	}
	ch.onRepairEnd(&pb.RepairEnd{Next: end.Next, FirstRetained: end.FirstRetained, Head: end.Head, Epoch: end.Epoch})
}

// readPage sends one InboxPull on a stream of its own and reads the page.
func readPage(ctx context.Context, conn *connection, req *pb.InboxPull, onPush func(*pb.Push), onEnd func(*pb.InboxPage)) error {
	return roundTrip(ctx, conn, &pb.Frame{Body: &pb.Frame_InboxPull{InboxPull: req}}, func(f *pb.Frame) (bool, error) {
		switch b := f.Body.(type) {
		case *pb.Frame_Push:
			onPush(b.Push)
			return false, nil
		case *pb.Frame_InboxPage:
			onEnd(b.InboxPage)
			return true, nil
		}
		return false, stream.Unexpected(f, "on a page stream")
	})
}

// roundTrip opens a stream, sends req, and hands each answer frame to on
// until on says done; an Error frame ends it with that error.
func roundTrip(ctx context.Context, conn *connection, req *pb.Frame, on func(*pb.Frame) (done bool, err error)) error {
	st, err := conn.qc.OpenStreamSync(ctx)
	if err != nil {
		return err
	}
	defer st.CancelRead(0)
	st.SetPriority(6, false)
	b, err := stream.AppendFrame(nil, req)
	if err != nil {
		return err
	}
	if _, err := st.Write(b); err != nil {
		return err
	}
	st.Close()
	stop := context.AfterFunc(ctx, func() { st.CancelRead(0) })
	defer stop()
	r := stream.NewReader(bufio.NewReader(st), 0)
	for {
		f, err := r.ReadFrame()
		if err == io.EOF {
			return fmt.Errorf("client: %s stream ended without an answer", stream.Name(req))
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		if e := f.GetError(); e != nil {
			return stream.FromFrame(e)
		}
		if done, err := on(f); done || err != nil {
			return err
		}
	}
}

// Waiting asks the server how many messages wait for this user on each
// channel (after the user's acknowledged cursor), in one round trip: what
// a badge shows before anything is fetched. At most 64 channels.
func (c *Client) Waiting(ctx context.Context, channels ...string) ([]Waiting, error) {
	for _, ch := range channels {
		if err := stream.ValidateChannel(ch); err != nil {
			return nil, err
		}
	}
	conn, err := c.current(ctx)
	if err != nil {
		return nil, err
	}
	if err := conn.requireInbox(); err != nil {
		return nil, err
	}
	var out []Waiting
	err = roundTrip(ctx, conn, &pb.Frame{Body: &pb.Frame_InboxCountRequest{InboxCountRequest: &pb.InboxCountRequest{Channels: channels}}}, func(f *pb.Frame) (bool, error) {
		counts := f.GetInboxCounts()
		if counts == nil {
			return false, stream.Unexpected(f, "on a count stream")
		}
		for _, n := range counts.Counts {
			w := Waiting{Channel: n.Channel, Epoch: n.Epoch, Head: n.Head, FirstRetained: n.FirstRetained, After: n.Acked, Count: n.Waiting, PageSize: conn.params.inboxPage}
			if n.Error != nil {
				w = Waiting{Channel: n.Channel, Err: stream.FromFrame(n.Error)}
			}
			out = append(out, w)
		}
		return true, nil
	})
	return out, err
}

// PageOptions choose a page of Client.Page.
type PageOptions struct {
	After uint64 // the page starts after this seq
	// Limit is the page size; zero: the server's (Welcome).
	Limit int
	// Newest reads the last Limit messages up to the head instead (but
	// none at or before After): show what is recent, back-fill the rest.
	Newest bool
}

// Page is one page of a channel's messages.
type Page struct {
	Messages      []Message
	Epoch         uint64
	Next          uint64 // the first seq after the page
	Head          uint64
	FirstRetained uint64
	Waiting       uint64 // messages after the page up to the head
}

// Page reads one page of channel, in seq order, without acknowledging
// anything: for a newest-first view before the in-order catch-up of a
// paged subscription, or for a reader of its own.
func (c *Client) Page(ctx context.Context, channel string, opts PageOptions) (Page, error) {
	if err := stream.ValidateChannel(channel); err != nil {
		return Page{}, err
	}
	conn, err := c.current(ctx)
	if err != nil {
		return Page{}, err
	}
	if err := conn.requireInbox(); err != nil {
		return Page{}, err
	}
	limit := opts.Limit
	if limit == 0 {
		limit = conn.params.inboxPage
	}
	if limit < 0 || limit > conn.params.inboxMaxPage {
		return Page{}, stream.Errorf(stream.BadPageSize, "page of %d messages: ask for 1 to %d", limit, conn.params.inboxMaxPage)
	}
	var page Page
	err = readPage(ctx, conn, &pb.InboxPull{Channel: channel, After: opts.After, Limit: uint32(limit), Newest: opts.Newest},
		func(p *pb.Push) { page.Messages = append(page.Messages, messageFrom(channel, p, true)) },
		func(e *pb.InboxPage) {
			page.Epoch, page.Next, page.Head, page.FirstRetained, page.Waiting = e.Epoch, e.Next, e.Head, e.FirstRetained, e.Waiting
		})
	c.stats.pages.Add(1)
	return page, err
}

// requireInbox fails when the server does not speak conversations.
func (conn *connection) requireInbox() error {
	if conn.features&stream.FeatureInbox == 0 {
		return stream.Errorf(stream.Unsupported, "the server does not support conversations and offline pages (feature bit 3)")
	}
	return nil
}
