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

// repair fetches from..to of ch over a new repair stream, so the live push
// on the session stream never waits behind it.
func (s *Session) repair(conn *connection, ch *channel, epoch, from, to uint64) {
	var end *pb.RepairEnd
	err := readRepair(s.c.ctx, conn, &pb.RepairRequest{Channel: ch.name, Epoch: epoch, From: from, To: to}, func(p *pb.Push) {
		ch.onPush(p, true)
	}, func(e *pb.RepairEnd) { end = e })
	if err != nil {
		var pe *stream.Error
		switch {
		case errors.As(err, &pe) && pe.Code == stream.WrongEpoch:
			// The channel's history changed under us: a fresh subscribe
			// reports the reset and restarts the channel.
			conn.close(stream.NoError, "")
		case errors.As(err, &pe) && pe.Code == stream.Forbidden:
			s.refused(ch.name, pe) // asking again would not help
		}
		s.c.log.Debug("repair failed", "channel", ch.name, "from", from, "to", to, "err", err)
	}
	ch.onRepairEnd(end)
}

// readRepair sends one repair request and reads its answer.
func readRepair(ctx context.Context, conn *connection, req *pb.RepairRequest, onPush func(*pb.Push), onEnd func(*pb.RepairEnd)) error {
	st, err := conn.qc.OpenStreamSync(ctx)
	if err != nil {
		return err
	}
	defer st.CancelRead(0)
	st.SetPriority(6, false)
	b, err := stream.AppendFrame(nil, &pb.Frame{Body: &pb.Frame_RepairRequest{RepairRequest: req}})
	if err != nil {
		return err
	}
	if _, err := st.Write(b); err != nil {
		return err
	}
	st.Close()
	r := stream.NewReader(bufio.NewReader(st), 0)
	for {
		f, err := r.ReadFrame()
		if err == io.EOF {
			return fmt.Errorf("client: repair stream of %s ended without repair_end", req.Channel)
		}
		if err != nil {
			return err
		}
		switch b := f.Body.(type) {
		case *pb.Frame_Push:
			onPush(b.Push)
		case *pb.Frame_RepairEnd:
			onEnd(b.RepairEnd)
			return nil
		case *pb.Frame_Error:
			return stream.FromFrame(b.Error)
		default:
			return stream.Unexpected(f, "on a repair stream")
		}
	}
}

// History reads channel's stored messages from..to (inclusive; to 0 means
// up to the head) of its current epoch, in pages. Seqs before the first
// retained one are reported as an expired gap instead. If the channel's
// history is reset between pages, History fails with WRONG_EPOCH rather
// than mix two histories.
func (c *Client) History(ctx context.Context, channel string, from, to uint64) ([]Message, *Gap, error) {
	if err := stream.ValidateChannel(channel); err != nil {
		return nil, nil, err
	}
	from = max(from, 1)
	upTo := to
	if upTo == 0 {
		upTo = ^uint64(0)
	}
	var (
		msgs  []Message
		gap   *Gap
		epoch uint64 // 0 on the first page: whatever is current
	)
	for {
		conn, err := c.current(ctx)
		if err != nil {
			return msgs, gap, err
		}
		var end *pb.RepairEnd
		err = readRepair(ctx, conn, &pb.RepairRequest{Channel: channel, Epoch: epoch, From: from, To: upTo}, func(p *pb.Push) {
			msgs = append(msgs, messageFrom(channel, p, true))
		}, func(e *pb.RepairEnd) { end = e })
		if err != nil {
			var pe *stream.Error
			if errors.As(err, &pe) && pe.Code == stream.InvalidRange && epoch == 0 {
				return nil, nil, fmt.Errorf("client: history of %s: %w", channel, err)
			}
			return msgs, gap, err
		}
		epoch = end.Epoch
		if gap == nil && end.FirstRetained > from {
			gap = &Gap{Channel: channel, Epoch: end.Epoch, From: from, To: min(end.FirstRetained-1, upTo, end.Head), Reason: GapExpired}
		}
		if last := min(upTo, end.Head); end.Next > last || end.Next <= from {
			return msgs, gap, nil
		}
		from = end.Next
	}
}
