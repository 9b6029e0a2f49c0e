package server

import (
	"io"

	"github.com/quicpush/quicpush/store"
	"github.com/quicpush/quicpush/stream"
	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// Offline messages (docs/PROTOCOL.md §15.4): a client coming back first asks
// how many messages wait on its channels (a count stream), then pulls them
// in pages (a page stream each), the acknowledgement of one page riding on
// the request for the next. Both kinds of stream are answered from the store
// and closed, like repair streams, at the same low priority.

// maxCountChannels bounds the channels of one InboxCountRequest.
const maxCountChannels = 64

// writeFrames writes frames to a page or count stream.
func writeFrames(st io.Writer, frames ...*pb.Frame) error {
	var b []byte
	for _, f := range frames {
		b, _ = stream.AppendFrame(b, f)
	}
	_, err := st.Write(b)
	return err
}

func (c *conn) serveInboxCount(st bidiStream, req *pb.InboxCountRequest) error {
	st.SetPriority(urgencyRepair, false)
	st.CancelRead(stream.NoError) // nothing more is read
	defer st.Close()
	if len(req.Channels) == 0 || len(req.Channels) > maxCountChannels {
		e := stream.Errorf(stream.BadRequest, "count 1 to %d channels, not %d", maxCountChannels, len(req.Channels))
		return writeFrames(st, e.Frame())
	}
	counts := &pb.InboxCounts{}
	for _, ch := range req.Channels {
		counts.Counts = append(counts.Counts, c.count(ch))
	}
	return writeFrames(st, &pb.Frame{Body: &pb.Frame_InboxCounts{InboxCounts: counts}})
}

// count says how many messages of channel wait for the user: those after
// the user's acknowledged cursor (all retained ones if the cursor is of a
// lost history).
func (c *conn) count(channel string) *pb.InboxCount {
	n := &pb.InboxCount{Channel: channel}
	refuse := func(e *stream.Error) *pb.InboxCount {
		n.Error = e.Frame().GetError()
		return n
	}
	if err := stream.ValidateChannel(channel); err != nil {
		return refuse(err.(*stream.Error))
	}
	if e := c.authorize(ActionSubscribe, channel, false); e != nil {
		return refuse(e)
	}
	b, err := c.s.cfg.Store.Bounds(c.ctx, channel)
	if err != nil {
		return refuse(stream.Errorf(stream.StoreUnavailable, "cannot read %s: %v", channel, err))
	}
	cur, err := c.s.cursors.cursor(c.ctx, c.user, channel)
	if err != nil {
		return refuse(stream.Errorf(stream.StoreUnavailable, "cannot read the cursor of %s: %v", channel, err))
	}
	n.Epoch, n.Head, n.FirstRetained, n.Acked = b.Epoch, b.Last, b.First, ackedSeq(cur, b.Epoch)
	n.Waiting = b.Last - min(b.Last, max(n.Acked, b.First-1))
	if owner, ok := stream.InboxOwner(channel); ok && owner == c.user && cur.Epoch == b.Epoch && cur.Seq > 0 {
		// Receipts not issued before a server restart are issued now.
		c.s.receipts.acked(c.user, cur)
	}
	return n
}

func (c *conn) serveInboxPull(st bidiStream, req *pb.InboxPull) error {
	st.SetPriority(urgencyRepair, false)
	st.CancelRead(stream.NoError)
	defer st.Close()
	fail := func(e *stream.Error) error {
		f := e.Frame()
		f.GetError().Channel = req.Channel
		return writeFrames(st, f)
	}
	if err := stream.ValidateChannel(req.Channel); err != nil {
		return fail(err.(*stream.Error))
	}
	if maxPage := c.s.cfg.InboxMaxPageSize; req.Limit == 0 || int(req.Limit) > maxPage {
		return fail(stream.Errorf(stream.BadPageSize, "page of %d messages: ask for 1 to %d (Welcome.inbox_page_size is %d)", req.Limit, maxPage, c.s.cfg.InboxPageSize))
	}
	if e := c.authorize(ActionSubscribe, req.Channel, false); e != nil {
		return fail(e)
	}
	b, err := c.s.cfg.Store.Bounds(c.ctx, req.Channel)
	if err != nil {
		return fail(stream.Errorf(stream.StoreUnavailable, "cannot read %s: %v", req.Channel, err))
	}
	if req.Epoch != 0 && req.Epoch != b.Epoch {
		return fail(stream.Errorf(stream.WrongEpoch, "epoch %d of %s is not its current epoch %d: subscribe again", req.Epoch, req.Channel, b.Epoch))
	}
	if req.After > b.Last {
		return fail(stream.Errorf(stream.InvalidRange, "position %d is beyond the head %d of %s", req.After, b.Last, req.Channel))
	}
	// The request is valid: its ack counts, before the page is read (a
	// client that breaks off now has still acknowledged the last page).
	if req.AckSeq > 0 {
		c.s.acked(c.user, req.Channel, store.Position{Epoch: req.AckEpoch, Seq: req.AckSeq})
	}
	limit := uint64(req.Limit)
	from := max(req.After+1, b.First)
	to := min(b.Last, req.After+limit)
	if req.Newest && b.Last >= limit {
		from, to = max(from, b.Last-limit+1), b.Last
	} else if req.Newest {
		to = b.Last
	}
	next, sent, storeErr, writeErr := c.pushRange(st, req.Channel, from, to)
	switch {
	case storeErr != nil:
		return fail(stream.Errorf(stream.StoreUnavailable, "cannot read %s: %v", req.Channel, storeErr))
	case writeErr != nil:
		return nil // the client gave up on this page
	}
	c.s.metrics.chat.pages.Add(1)
	c.s.metrics.chat.pageMessages.Add(sent)
	return writeFrames(st, &pb.Frame{Body: &pb.Frame_InboxPage{InboxPage: &pb.InboxPage{
		Epoch: b.Epoch, From: from, Next: next, Head: b.Last, FirstRetained: b.First, Waiting: b.Last - min(b.Last, next-1),
	}}})
}
