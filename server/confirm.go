package server

import (
	"context"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/quicpush/quicpush/store"
	"github.com/quicpush/quicpush/stream"
	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// ConfirmConfig configures per-recipient confirmation of reliable
// publishes (docs/PROTOCOL.md §16.1).
type ConfirmConfig struct {
	// Interval merges progress: a publishing session gets at most one batch
	// of ConfirmProgress frames per Interval (the first change after a
	// quiet spell goes at once). Zero: 250 ms.
	Interval time.Duration
	// MaxDeadline is the longest deadline a publisher may ask for; a longer
	// one gets INVALID_RANGE. Zero: 10 min.
	MaxDeadline time.Duration
	// Linger is how long a message is still tracked after its deadline
	// while some recipients have not confirmed, so the publisher sees
	// late confirmations (a phone back from a tunnel). Zero: 2 min.
	Linger time.Duration
	// MaxPerConn bounds the confirmations tracked for one connection;
	// beyond it a publish asking for one gets CONFIRM_LIMIT and is not
	// stored. Zero: 64.
	MaxPerConn int
	// MaxRecipients bounds the recipients of one confirmation; a publish
	// to a channel with more subscribers gets CONFIRM_TOO_MANY_RECIPIENTS
	// and is not stored. Zero: 10000.
	MaxRecipients int
}

func (c ConfirmConfig) withDefaults() ConfirmConfig {
	if c.Interval <= 0 {
		c.Interval = 250 * time.Millisecond
	}
	if c.MaxDeadline <= 0 {
		c.MaxDeadline = 10 * time.Minute
	}
	if c.Linger <= 0 {
		c.Linger = 2 * time.Minute
	}
	if c.MaxPerConn <= 0 {
		c.MaxPerConn = 64
	}
	if c.MaxRecipients <= 0 {
		c.MaxRecipients = 10000
	}
	return c
}

// confirmNames caps the missing users listed in one ConfirmReport (the
// report says how many more there are).
const confirmNames = 100

// confirms tracks the confirmations asked for by publishers. The
// recipients of a message are the users (but the publisher) with a
// session subscribed to its channel when the server takes the publish,
// just before storing it; a recipient confirms when one of its clients
// acknowledges (after its handler returned) a position at or past the
// message in the same epoch.
type confirms struct {
	cfg     ConfirmConfig
	m       *confirmMetrics
	cursors *cursorWriter

	mu        sync.Mutex
	byKey     map[confirmKey]*confirmation
	byChannel map[string]map[*confirmation]struct{}
	perConn   map[*conn]int
	outs      map[*session]*confirmOut
}

type confirmKey struct {
	sess      *session
	requestID uint64
}

type confirmation struct {
	key        confirmKey
	channel    string
	deadline   time.Duration
	epoch, seq uint64 // seq 0: not stored yet
	total      int
	pending    map[string]struct{}       // recipients yet to confirm
	early      map[string]store.Position // their acks before the seq was known
	dirty      bool                      // progress to send
	timers     []*time.Timer
}

// confirmOut merges the progress frames of one publishing session.
type confirmOut struct {
	dirty map[*confirmation]struct{}
	timer *time.Timer
}

// confirmMetrics are bumped on the hot path and read by the collector.
type confirmMetrics struct {
	complete, expired, dropped, refused atomic.Uint64
	progressFrames, reportFrames        atomic.Uint64
	frameBytes                          atomic.Uint64 // of both kinds, length prefixes included
	tracked                             atomic.Int64  // acks skip the lock at zero
}

func newConfirms(cfg ConfirmConfig, m *confirmMetrics, cursors *cursorWriter) *confirms {
	return &confirms{cfg: cfg, m: m, cursors: cursors, byKey: map[confirmKey]*confirmation{},
		byChannel: map[string]map[*confirmation]struct{}{}, perConn: map[*conn]int{}, outs: map[*session]*confirmOut{}}
}

// begin registers a confirmation for p before it is stored, with the
// channel's subscribers of now as its recipients. A refusal stores nothing.
func (cs *confirms) begin(sess *session, p *pb.Publish, recipients map[string]struct{}) *stream.Error {
	delete(recipients, sess.c.user) // the publisher does not confirm to itself
	if len(recipients) > cs.cfg.MaxRecipients {
		cs.m.refused.Add(1)
		return stream.Errorf(stream.ConfirmTooManyRecipients, "%s has %d subscribers: a confirmation tracks at most %d", p.Channel, len(recipients), cs.cfg.MaxRecipients)
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	key := confirmKey{sess, p.RequestId}
	if cs.byKey[key] != nil {
		cs.m.refused.Add(1)
		return stream.Errorf(stream.BadRequest, "request id %d is already awaiting confirmation on this session", p.RequestId)
	}
	if cs.perConn[sess.c] >= cs.cfg.MaxPerConn {
		cs.m.refused.Add(1)
		e := stream.Errorf(stream.ConfirmLimit, "this connection already tracks %d confirmations", cs.cfg.MaxPerConn)
		e.RetryAfterMs = uint32(min(cs.cfg.Interval*4, 5*time.Second) / time.Millisecond)
		return e
	}
	c := &confirmation{key: key, channel: p.Channel, deadline: time.Duration(p.Confirm.DeadlineMs) * time.Millisecond,
		total: len(recipients), pending: recipients, early: map[string]store.Position{}}
	cs.byKey[key] = c
	if cs.byChannel[c.channel] == nil {
		cs.byChannel[c.channel] = map[*confirmation]struct{}{}
	}
	cs.byChannel[c.channel][c] = struct{}{}
	cs.perConn[sess.c]++
	cs.m.tracked.Add(1)
	return nil
}

// stored gives a confirmation its message's position, once the PublishAck
// is sent (so progress never overtakes it); err drops it.
func (cs *confirms) stored(sess *session, requestID uint64, res publishResult) {
	cs.mu.Lock()
	c := cs.byKey[confirmKey{sess, requestID}]
	if c == nil {
		cs.mu.Unlock()
		return // the session went away meanwhile
	}
	if res.err != nil {
		cs.m.dropped.Add(1)
		cs.remove(c)
		cs.mu.Unlock()
		return
	}
	c.epoch, c.seq = res.Epoch, res.Seq
	for user, pos := range c.early {
		cs.confirmIf(c, user, pos)
	}
	c.early = nil
	var pending []string
	if res.Duplicate {
		// A publish sent again (say after the publisher reconnected): the
		// recipients may have acknowledged it long ago.
		for user := range c.pending {
			pending = append(pending, user)
		}
	}
	cs.mu.Unlock()
	if len(pending) > 0 {
		cs.readCursors(c, pending)
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.byKey[c.key] != c {
		return
	}
	c.timers = append(c.timers,
		time.AfterFunc(c.deadline, func() { cs.atDeadline(c) }),
		time.AfterFunc(c.deadline+cs.cfg.Linger, func() { cs.atEnd(c) }))
	cs.changed(c)
}

// readCursors confirms the users of pending whose acknowledged cursor is
// already past c (outside cs.mu: it may read the store).
func (cs *confirms) readCursors(c *confirmation, pending []string) {
	ctx := context.WithoutCancel(c.key.sess.c.ctx)
	got := map[string]store.Position{}
	for _, user := range pending {
		if pos, err := cs.cursors.cursor(ctx, user, c.channel); err == nil {
			got[user] = pos
		}
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for user, pos := range got {
		cs.confirmIf(c, user, pos)
	}
}

// acked is told of every Ack: user has handled channel up to pos.
func (cs *confirms) acked(user, channel string, pos store.Position) {
	if cs.m.tracked.Load() == 0 {
		return
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for c := range cs.byChannel[channel] {
		if _, ok := c.pending[user]; !ok {
			continue
		}
		if c.seq == 0 {
			if old, ok := c.early[user]; !ok || old.Epoch != pos.Epoch || old.Seq < pos.Seq {
				c.early[user] = pos
			}
			continue
		}
		cs.confirmIf(c, user, pos)
	}
}

// confirmIf counts user's confirmation if pos covers c; cs.mu held.
func (cs *confirms) confirmIf(c *confirmation, user string, pos store.Position) {
	if c.seq == 0 || pos.Epoch != c.epoch || pos.Seq < c.seq {
		return
	}
	if _, ok := c.pending[user]; ok {
		delete(c.pending, user)
		cs.changed(c)
	}
}

// changed schedules c's progress: at once if its session sent none within
// the interval, else with the session's next batch; cs.mu held.
func (cs *confirms) changed(c *confirmation) {
	if c.seq == 0 {
		return // the PublishAck is not out yet
	}
	c.dirty = true
	out := cs.outs[c.key.sess]
	if out == nil {
		out = &confirmOut{dirty: map[*confirmation]struct{}{}}
		cs.outs[c.key.sess] = out
	}
	out.dirty[c] = struct{}{}
	if out.timer == nil {
		cs.flush(c.key.sess, out)
		cs.arm(c.key.sess, out)
	}
}

func (cs *confirms) arm(sess *session, out *confirmOut) {
	out.timer = time.AfterFunc(cs.cfg.Interval, func() {
		cs.mu.Lock()
		defer cs.mu.Unlock()
		out.timer = nil
		if cs.outs[sess] != out {
			return
		}
		if len(out.dirty) == 0 {
			delete(cs.outs, sess) // quiet: the next change goes at once
			return
		}
		cs.flush(sess, out)
		cs.arm(sess, out)
	})
}

// flush sends the progress of sess's changed confirmations in one write,
// and ends those that are complete; cs.mu held.
func (cs *confirms) flush(sess *session, out *confirmOut) {
	var b []byte
	for c := range out.dirty {
		if !c.dirty {
			continue
		}
		c.dirty = false
		done := len(c.pending) == 0
		b, _ = stream.AppendFrame(b, &pb.Frame{Body: &pb.Frame_ConfirmProgress{ConfirmProgress: &pb.ConfirmProgress{
			RequestId: c.key.requestID, Channel: c.channel, Epoch: c.epoch, Seq: c.seq,
			Confirmed: uint32(c.total - len(c.pending)), Total: uint32(c.total), Final: done,
		}}})
		cs.m.progressFrames.Add(1)
		if done {
			cs.m.complete.Add(1)
			cs.remove(c)
		}
	}
	clear(out.dirty)
	if len(b) > 0 {
		cs.m.frameBytes.Add(uint64(len(b)))
		sess.sendOrFail(b)
	}
}

// atDeadline reports the missing recipients, if any.
func (cs *confirms) atDeadline(c *confirmation) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.byKey[c.key] != c || len(c.pending) == 0 {
		return
	}
	cs.report(c, false)
}

// atEnd stops tracking a message whose recipients did not all confirm.
func (cs *confirms) atEnd(c *confirmation) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.byKey[c.key] != c {
		return
	}
	cs.report(c, true)
	cs.m.expired.Add(1)
	cs.remove(c)
}

// report sends c's ConfirmReport; cs.mu held.
func (cs *confirms) report(c *confirmation, final bool) {
	missing := make([]string, 0, len(c.pending))
	for user := range c.pending {
		missing = append(missing, user)
	}
	sort.Strings(missing)
	more := len(missing) - min(len(missing), confirmNames)
	c.dirty = false // the report says all the progress does
	b := mustFrame(&pb.Frame{Body: &pb.Frame_ConfirmReport{ConfirmReport: &pb.ConfirmReport{
		RequestId: c.key.requestID, Channel: c.channel, Epoch: c.epoch, Seq: c.seq,
		Confirmed: uint32(c.total - len(c.pending)), Total: uint32(c.total),
		Missing: missing[:len(missing)-more], MissingMore: uint32(more), Final: final,
	}}})
	cs.m.reportFrames.Add(1)
	cs.m.frameBytes.Add(uint64(len(b)))
	c.key.sess.sendOrFail(b)
}

// remove stops tracking c; cs.mu held.
func (cs *confirms) remove(c *confirmation) {
	if cs.byKey[c.key] != c {
		return
	}
	for _, t := range c.timers {
		t.Stop()
	}
	delete(cs.byKey, c.key)
	if set := cs.byChannel[c.channel]; set != nil {
		delete(set, c)
		if len(set) == 0 {
			delete(cs.byChannel, c.channel)
		}
	}
	if cs.perConn[c.key.sess.c]--; cs.perConn[c.key.sess.c] <= 0 {
		delete(cs.perConn, c.key.sess.c)
	}
	if out := cs.outs[c.key.sess]; out != nil {
		delete(out.dirty, c)
	}
	cs.m.tracked.Add(-1)
}

// dropSession forgets every confirmation of sess: the frames about them
// could only go on its stream, which is gone.
func (cs *confirms) dropSession(sess *session) {
	if cs.m.tracked.Load() == 0 {
		return
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for key, c := range cs.byKey {
		if key.sess == sess {
			cs.m.dropped.Add(1)
			cs.remove(c)
		}
	}
	if out := cs.outs[sess]; out != nil {
		if out.timer != nil {
			out.timer.Stop()
		}
		delete(cs.outs, sess)
	}
}

// close stops every timer (the server is closing).
func (cs *confirms) close() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for _, c := range cs.byKey {
		cs.remove(c)
	}
	for sess, out := range cs.outs {
		if out.timer != nil {
			out.timer.Stop()
		}
		delete(cs.outs, sess)
	}
}

// recipients returns the users with a session subscribed to channel.
func (h *hub) recipients(channel string) map[string]struct{} {
	users := map[string]struct{}{}
	ch := h.lookup(channel, false)
	if ch == nil {
		return users
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	for sess := range ch.subs {
		users[sess.c.user] = struct{}{}
	}
	return users
}

// checkConfirm validates a publish's confirmation request.
func (s *session) checkConfirm(p *pb.Publish) *stream.Error {
	if p.Confirm == nil {
		return nil
	}
	if p.Class == pb.Class_CLASS_DROPPABLE {
		return stream.Errorf(stream.BadRequest, "only reliable messages can be confirmed: droppable ones are not stored or acknowledged")
	}
	if d := time.Duration(p.Confirm.DeadlineMs) * time.Millisecond; d <= 0 || d > s.c.s.cfg.Confirm.MaxDeadline {
		return stream.Errorf(stream.InvalidRange, "confirmation deadline %v: must be 1ms to %v", d, s.c.s.cfg.Confirm.MaxDeadline)
	}
	return nil
}

var (
	descConfirmations = desc("confirmations_total",
		"Per-recipient confirmations of reliable publishes, by outcome: complete (every recipient confirmed), expired (tracking ended at deadline + linger with some missing), dropped (the publishing session went away, or the publish failed), refused (CONFIRM_LIMIT, CONFIRM_TOO_MANY_RECIPIENTS, a request id in use).", "outcome")
	descConfirmTracked = desc("confirmations_tracked",
		"Confirmations being tracked now.")
	descConfirmFrames = desc("confirm_frames_total",
		"Frames sent to publishers about confirmations, by type: progress (merged per interval) or report (missing recipients).", "type")
	descConfirmBytes = desc("confirm_frame_bytes_total",
		"Bytes of the confirmation frames sent to publishers (progress and reports, length prefixes included).")
)

func (m *confirmMetrics) collect(counter func(*prometheus.Desc, *atomic.Uint64, ...string), gauge func(*prometheus.Desc, int64, ...string)) {
	counter(descConfirmations, &m.complete, "complete")
	counter(descConfirmations, &m.expired, "expired")
	counter(descConfirmations, &m.dropped, "dropped")
	counter(descConfirmations, &m.refused, "refused")
	gauge(descConfirmTracked, int64(m.tracked.Load()))
	counter(descConfirmFrames, &m.progressFrames, "progress")
	counter(descConfirmFrames, &m.reportFrames, "report")
	counter(descConfirmBytes, &m.frameBytes)
}
