package server

import (
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/quicpush/quicpush/stream"
	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// PresenceConfig configures presence (docs/PROTOCOL.md §16.2).
type PresenceConfig struct {
	// Interval merges a channel's joins and leaves: its watchers get at
	// most one PresenceUpdate per Interval (the first change after a quiet
	// spell goes at once). Zero: 1 s.
	Interval time.Duration
	// Grace is how long a user whose last subscription ended without a
	// goodbye (a connection lost or given up, a session reset) still
	// counts as online: a client that comes back within it (a fast
	// resume) never left. Zero: 10 s; negative: no grace.
	Grace time.Duration
	// MaxWatches bounds the channels whose presence one connection
	// watches; beyond it PresenceWatch gets PRESENCE_LIMIT. Zero: 64.
	MaxWatches int
}

func (c PresenceConfig) withDefaults() PresenceConfig {
	if c.Interval <= 0 {
		c.Interval = time.Second
	}
	if c.Grace == 0 {
		c.Grace = 10 * time.Second
	}
	if c.MaxWatches <= 0 {
		c.MaxWatches = 64
	}
	return c
}

// Presence limits of the protocol.
const (
	presenceNames       = 50   // names of joined (and of left) users in one update
	presencePageDefault = 100  // PresenceList limit 0
	presencePageMax     = 1000 // PresenceList limit above this: INVALID_RANGE
	presencePageBytes   = 32 << 10
)

// presence tracks who is online in each channel: a user is online while
// one of its sessions (on any connection) is subscribed to the channel,
// and for the grace period after its last one went away without a
// goodbye. Watchers get merged updates, never a list per change.
//
// Lock order: a hub channel's mu before p.mu (the hub reports joins and
// leaves under its own lock, so they pair exactly with its subscribers).
type presence struct {
	cfg PresenceConfig
	m   *presenceMetrics

	mu       sync.Mutex
	channels map[string]*presenceChannel
	watches  map[*conn]int // channels watched, per connection
}

type presenceChannel struct {
	name     string
	users    map[string]*presenceUser
	watchers map[*session]struct{}
	// Net changes since the last update: a user who joined and left
	// within one interval is in neither.
	joined, left map[string]struct{}
	timer        *time.Timer // running while updates are being merged
}

type presenceUser struct {
	sessions int
	gen      uint64 // which pending leave is current
	leaving  *time.Timer
}

// presenceMetrics are bumped on the hot path and read by the collector.
type presenceMetrics struct {
	joins, goodbyes, lostLeaves, updates atomic.Uint64
	watches                              atomic.Int64
}

func newPresence(cfg PresenceConfig, m *presenceMetrics) *presence {
	return &presence{cfg: cfg, m: m, channels: map[string]*presenceChannel{}, watches: map[*conn]int{}}
}

func (p *presence) channel(name string) *presenceChannel {
	pc := p.channels[name]
	if pc == nil {
		pc = &presenceChannel{name: name, users: map[string]*presenceUser{}, watchers: map[*session]struct{}{},
			joined: map[string]struct{}{}, left: map[string]struct{}{}}
		p.channels[name] = pc
	}
	return pc
}

// dropIfIdle forgets a channel nobody is in or watches; p.mu held.
func (p *presence) dropIfIdle(pc *presenceChannel) {
	if len(pc.users) == 0 && len(pc.watchers) == 0 && p.channels[pc.name] == pc {
		if pc.timer != nil {
			pc.timer.Stop()
		}
		delete(p.channels, pc.name)
	}
}

// close stops every timer (the server is closing): nothing of it
// outlives Server.Close.
func (p *presence) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pc := range p.channels {
		if pc.timer != nil {
			pc.timer.Stop()
		}
		for _, u := range pc.users {
			if u.leaving != nil {
				u.leaving.Stop()
			}
		}
	}
	clear(p.channels)
}

// join counts one more session of user subscribed to channel.
func (p *presence) join(channel, user string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pc := p.channel(channel)
	u := pc.users[user]
	if u == nil {
		pc.users[user] = &presenceUser{sessions: 1}
		p.m.joins.Add(1)
		if _, back := pc.left[user]; back {
			delete(pc.left, user) // left and came back within one interval
		} else {
			pc.joined[user] = struct{}{}
		}
		p.changed(pc)
		return
	}
	u.sessions++
	if u.leaving != nil { // back within the grace period: never left
		u.leaving.Stop()
		u.leaving = nil
		u.gen++
	}
}

// leave counts one session of user fewer on channel. With goodbye (the
// client unsubscribed or ended its session) the user leaves at once when
// it was its last session; without, after the grace period.
func (p *presence) leave(channel, user string, goodbye bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pc := p.channels[channel]
	if pc == nil || pc.users[user] == nil {
		return
	}
	u := pc.users[user]
	if u.sessions--; u.sessions > 0 {
		return
	}
	if goodbye || p.cfg.Grace < 0 {
		p.m.goodbyes.Add(1)
		p.remove(pc, user)
		return
	}
	u.gen++
	gen := u.gen
	u.leaving = time.AfterFunc(p.cfg.Grace, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if pc.users[user] == u && u.sessions == 0 && u.gen == gen && p.channels[channel] == pc {
			p.m.lostLeaves.Add(1)
			p.remove(pc, user)
		}
	})
}

// remove takes user off pc; p.mu held.
func (p *presence) remove(pc *presenceChannel, user string) {
	delete(pc.users, user)
	if _, new := pc.joined[user]; new {
		delete(pc.joined, user) // joined and left within one interval
	} else {
		pc.left[user] = struct{}{}
	}
	p.changed(pc)
	p.dropIfIdle(pc)
}

// changed sends pc's update now if none went out within the interval,
// else leaves it to the timer; p.mu held.
func (p *presence) changed(pc *presenceChannel) {
	if len(pc.watchers) == 0 {
		clear(pc.joined)
		clear(pc.left)
		return
	}
	if pc.timer != nil {
		return
	}
	p.flush(pc)
	p.arm(pc)
}

func (p *presence) arm(pc *presenceChannel) {
	pc.timer = time.AfterFunc(p.cfg.Interval, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		pc.timer = nil
		if p.channels[pc.name] != pc || len(pc.joined)+len(pc.left) == 0 {
			return // quiet: the next change goes at once
		}
		p.flush(pc)
		p.arm(pc)
	})
}

// flush sends the merged changes to every watcher, encoded once; p.mu held.
func (p *presence) flush(pc *presenceChannel) {
	if len(pc.joined)+len(pc.left) == 0 {
		return
	}
	u := &pb.PresenceUpdate{Channel: pc.name, Online: uint32(len(pc.users)),
		Joined: firstNames(pc.joined, presenceNames), Left: firstNames(pc.left, presenceNames),
		JoinedCount: uint32(len(pc.joined)), LeftCount: uint32(len(pc.left))}
	clear(pc.joined)
	clear(pc.left)
	b := mustFrame(&pb.Frame{Body: &pb.Frame_PresenceUpdate{PresenceUpdate: u}})
	for sess := range pc.watchers {
		sess.sendOrFail(b)
	}
	p.m.updates.Add(uint64(len(pc.watchers)))
}

// firstNames returns the n smallest names of set, sorted.
func firstNames(set map[string]struct{}, n int) []string {
	names := make([]string, 0, len(set))
	for name := range set {
		names = append(names, name)
	}
	sort.Strings(names)
	return names[:min(n, len(names))]
}

// watch adds sess to channel's watchers and answers with the online count.
func (p *presence) watch(sess *session, requestID uint64, channel string) *stream.Error {
	p.mu.Lock()
	defer p.mu.Unlock()
	pc := p.channel(channel)
	if _, dup := pc.watchers[sess]; !dup {
		if p.watches[sess.c] >= p.cfg.MaxWatches {
			p.dropIfIdle(pc)
			return stream.Errorf(stream.PresenceLimit, "this connection already watches the presence of %d channels", p.cfg.MaxWatches)
		}
		p.watches[sess.c]++
		p.m.watches.Add(1)
		pc.watchers[sess] = struct{}{}
	}
	// Under p.mu: no update of pc can overtake this answer.
	sess.sendOrFail(mustFrame(&pb.Frame{Body: &pb.Frame_PresenceUpdate{PresenceUpdate: &pb.PresenceUpdate{
		RequestId: requestID, Channel: channel, Online: uint32(len(pc.users)),
	}}}))
	return nil
}

func (p *presence) unwatch(sess *session, channel string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pc := p.channels[channel]; pc != nil {
		p.unwatchLocked(sess, pc)
	}
}

func (p *presence) unwatchLocked(sess *session, pc *presenceChannel) {
	if _, ok := pc.watchers[sess]; !ok {
		return
	}
	delete(pc.watchers, sess)
	p.m.watches.Add(-1)
	if p.watches[sess.c]--; p.watches[sess.c] <= 0 {
		delete(p.watches, sess.c)
	}
	p.dropIfIdle(pc)
}

// unwatchAll ends every watch of sess (the session is going away).
func (p *presence) unwatchAll(sess *session) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.watches[sess.c] == 0 {
		return
	}
	for _, pc := range p.channels {
		p.unwatchLocked(sess, pc)
	}
}

// list returns a page of channel's online users after `after`, sorted,
// and the online count.
func (p *presence) list(channel, after string, limit int) (users []string, online int, next string) {
	p.mu.Lock()
	pc := p.channels[channel]
	if pc == nil {
		p.mu.Unlock()
		return nil, 0, ""
	}
	online = len(pc.users)
	for name := range pc.users {
		if name > after {
			users = append(users, name)
		}
	}
	p.mu.Unlock()
	slices.Sort(users)
	// A page fits one frame whatever the names' lengths.
	n, size := 0, 0
	for n < len(users) && n < limit && size+len(users[n])+2 <= presencePageBytes {
		size += len(users[n]) + 2
		n++
	}
	if n < len(users) {
		users, next = users[:n], users[n-1]
	}
	return users, online, next
}

// watchPresence answers a PresenceWatch: the caller must be allowed to
// subscribe to the channel (watching does not make it online).
func (s *session) watchPresence(w *pb.PresenceWatch) error {
	if err := stream.ValidateChannel(w.Channel); err != nil {
		return s.replyError(err.(*stream.Error), w.RequestId, w.Channel)
	}
	if e := s.c.authorize(ActionSubscribe, w.Channel, false); e != nil {
		return s.replyError(e, w.RequestId, w.Channel)
	}
	if e := s.c.s.presence.watch(s, w.RequestId, w.Channel); e != nil {
		return s.replyError(e, w.RequestId, w.Channel)
	}
	return nil
}

// listPresence answers a PresenceList with one page of members.
func (s *session) listPresence(l *pb.PresenceList) error {
	if err := stream.ValidateChannel(l.Channel); err != nil {
		return s.replyError(err.(*stream.Error), l.RequestId, l.Channel)
	}
	limit := int(l.Limit)
	switch {
	case limit == 0:
		limit = presencePageDefault
	case limit > presencePageMax:
		return s.replyError(stream.Errorf(stream.InvalidRange, "page of %d members: at most %d", limit, presencePageMax), l.RequestId, l.Channel)
	}
	if e := s.c.authorize(ActionSubscribe, l.Channel, false); e != nil {
		return s.replyError(e, l.RequestId, l.Channel)
	}
	users, online, next := s.c.s.presence.list(l.Channel, l.After, limit)
	return s.reply(&pb.Frame{Body: &pb.Frame_PresenceMembers{PresenceMembers: &pb.PresenceMembers{
		RequestId: l.RequestId, Channel: l.Channel, Users: users, Online: uint32(online), Next: next,
	}}})
}

var (
	descPresenceWatches = desc("presence_watches",
		"Presence watches open now (a session watching one channel).")
	descPresenceUpdates = desc("presence_updates_total",
		"PresenceUpdate frames sent to watchers (merged: at most one per channel per interval per watcher).")
	descPresenceChanges = desc("presence_changes_total",
		"Users joining and leaving channels, by kind: join, goodbye (left at once: unsubscribed or ended the session), lost (left after the grace period: the connection was lost).", "kind")
)

func (m *presenceMetrics) collect(counter func(*prometheus.Desc, *atomic.Uint64, ...string), gauge func(*prometheus.Desc, int64, ...string)) {
	gauge(descPresenceWatches, m.watches.Load())
	counter(descPresenceUpdates, &m.updates)
	counter(descPresenceChanges, &m.joins, "join")
	counter(descPresenceChanges, &m.goodbyes, "goodbye")
	counter(descPresenceChanges, &m.lostLeaves, "lost")
}
