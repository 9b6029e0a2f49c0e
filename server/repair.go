package server

import (
	"io"
	"time"

	"github.com/quicpush/quicpush/stream"
	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// repairPage bounds the messages read from the store at once.
const repairPage = 256

// serveRepair answers one repair request (epoch 0 reads whatever the
// current epoch holds: a history read) from the store and closes the
// stream. It runs on the stream's own goroutine and writes at the lowest
// priority, so a large repair never delays live pushes.
func (c *conn) serveRepair(st bidiStream, req *pb.RepairRequest) error {
	start := time.Now()
	c.s.metrics.repairStreams.Add(1)
	defer c.s.metrics.repairStreams.Add(-1)
	st.SetPriority(urgencyRepair, false)
	st.CancelRead(stream.NoError) // nothing more is read
	defer st.Close()
	fail := func(e *stream.Error) error {
		c.s.metrics.repairsRefused.Add(1)
		f := e.Frame()
		f.GetError().Channel = req.Channel
		b, _ := stream.AppendFrame(nil, f)
		_, err := st.Write(b)
		return err
	}
	if err := stream.ValidateChannel(req.Channel); err != nil {
		return fail(err.(*stream.Error))
	}
	if e := c.authorize(ActionSubscribe, req.Channel, false); e != nil {
		return fail(e) // reading history is subscribing to the past
	}
	b, err := c.s.cfg.Store.Bounds(c.ctx, req.Channel)
	if err != nil {
		return fail(stream.Errorf(stream.StoreUnavailable, "cannot read %s: %v", req.Channel, err))
	}
	if req.Epoch != 0 && req.Epoch != b.Epoch {
		return fail(stream.Errorf(stream.WrongEpoch, "epoch %d of %s is not its current epoch %d: subscribe again", req.Epoch, req.Channel, b.Epoch))
	}
	if req.From == 0 || req.From > req.To || req.From > b.Last+1 {
		return fail(stream.Errorf(stream.InvalidRange, "range %d..%d of %s is invalid (head %d)", req.From, req.To, req.Channel, b.Last))
	}
	limit := c.s.cfg.RepairBatch
	if req.Limit > 0 && int(req.Limit) < limit {
		limit = int(req.Limit)
	}
	from := max(req.From, b.First)
	to := min(req.To, b.Last, from+uint64(limit)-1)
	next, sent, storeErr, writeErr := c.pushRange(st, req.Channel, from, to)
	c.s.metrics.repairMessages.Add(sent)
	switch {
	case storeErr != nil:
		return fail(stream.Errorf(stream.StoreUnavailable, "cannot read %s: %v", req.Channel, storeErr))
	case writeErr != nil:
		c.s.metrics.repairsAborted.Add(1)
		return nil // the client gave up on this repair
	}
	end, _ := stream.AppendFrame(nil, &pb.Frame{Body: &pb.Frame_RepairEnd{RepairEnd: &pb.RepairEnd{
		Next: next, FirstRetained: b.First, Head: b.Last, Epoch: b.Epoch,
	}}})
	st.Write(end)
	c.s.metrics.repairsServed.Add(1)
	c.s.metrics.repairDuration.Observe(time.Since(start).Seconds())
	return nil
}

// pushRange writes channel's stored messages from..to on st as pushes, a
// store page at a time (repairs and offline pages), and returns the seq
// after the last one written and how many were. A failed read is storeErr;
// a failed write (the client gave up) is writeErr.
func (c *conn) pushRange(st io.Writer, channel string, from, to uint64) (next, sent uint64, storeErr, writeErr error) {
	next = from
	var buf []byte
	for next <= to {
		msgs, err := c.s.cfg.Store.Range(c.ctx, channel, next, to, repairPage)
		if err != nil || len(msgs) == 0 {
			return next, sent, err, nil
		}
		buf = buf[:0]
		for _, m := range msgs {
			buf, _ = stream.AppendFrame(buf, pushFrame(m))
		}
		if _, err := st.Write(buf); err != nil {
			return next, sent, nil, err
		}
		sent += uint64(len(msgs))
		next = msgs[len(msgs)-1].Seq + 1
	}
	return next, sent, nil, nil
}
