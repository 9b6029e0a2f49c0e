package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/quicpush/quicpush/client"
	"github.com/quicpush/quicpush/stream"
)

type subCmd struct {
	Channels     []string      `arg:"" name:"channel" help:"Channels to subscribe to. SESSION:CHANNEL puts a channel on its own business session (e.g. classroom:room/math-101 chat:user/alice), so several sessions share one connection; a channel whose name holds ':' must be given with its session."`
	Session      string        `default:"default" env:"QUICPUSH_SUB_SESSION" help:"Session of the channels given without one."`
	Since        *uint64       `env:"QUICPUSH_SUB_SINCE" placeholder:"SEQ" help:"Start after this seq (0: from the first) when --state has no position for the channel; default: live from the head (a user's own channels user/NAME: after its acknowledged cursor)."`
	Count        int           `env:"QUICPUSH_SUB_COUNT" placeholder:"N" help:"Exit 0 once N messages (over all channels; gaps do not count) were printed; default: run until interrupted."`
	Timeout      time.Duration `env:"QUICPUSH_SUB_TIMEOUT" placeholder:"D" help:"Give up after D (e.g. 30s): with --count, exit 1 unless all N arrived; without, stop and exit 0."`
	State        string        `type:"path" env:"QUICPUSH_SUB_STATE" placeholder:"FILE" help:"Persist handled positions in FILE (crash-safe), so that a restarted sub goes on right after them."`
	MigrateEvery time.Duration `env:"QUICPUSH_SUB_MIGRATE_EVERY" placeholder:"D" help:"Every D, move to a new network as a phone would: a new local port, or the next 127.0.0.x address when the server is on loopback (connection migration; a reconnect when it cannot)."`
	Stats        bool          `env:"QUICPUSH_SUB_STATS" help:"On exit, print a last line {\"stats\":{connects,reconnects,used_0rtt,migrations,migration_fallbacks}}."`
	parsed       []subscription
}

type subscription struct{ session, channel string }

// Help explains the output, below the flags of "quicpush sub --help".
func (subCmd) Help() string {
	return `Prints one JSON object per message handed over:
  {"session","channel","seq","epoch","class":"reliable"|"droppable","data","repaired","id","from","time"}
one per range of seqs that will never arrive (expired by retention, or the
channel's history was reset):
  {"session","channel","gap":[from,to],"reason":"expired"|"reset","epoch"}
and, when the server shed droppable messages because this client fell behind:
  {"session","channel","shed":N}
(to is null when unknown). A line is written before the message counts as
handled, so with --state a crash never loses a message: at worst the last one
is printed again.`
}

// Validate splits SESSION:CHANNEL and checks the names before connecting.
func (c *subCmd) Validate() error {
	seen := map[subscription]bool{}
	channels := map[string]bool{}
	for _, arg := range c.Channels {
		sub := subscription{session: c.Session, channel: arg}
		if session, channel, ok := strings.Cut(arg, ":"); ok {
			sub = subscription{session: session, channel: channel}
		}
		if sub.session == "" {
			return fmt.Errorf("%q: empty session name", arg)
		}
		if err := stream.ValidateChannel(sub.channel); err != nil {
			return plain(err)
		}
		if seen[sub] {
			return fmt.Errorf("channel %s given twice on session %s", sub.channel, sub.session)
		}
		// The position store is keyed by channel alone.
		if c.State != "" && channels[sub.channel] {
			return fmt.Errorf("channel %s is on two sessions: with --state a channel can be on one only", sub.channel)
		}
		seen[sub], channels[sub.channel] = true, true
		c.parsed = append(c.parsed, sub)
	}
	if c.Count < 0 {
		return errors.New("--count must not be negative")
	}
	return nil
}

func (c *subCmd) Run(ctx context.Context, e *env) error {
	ctx, cancel := withTimeout(ctx, c.Timeout)
	defer cancel()
	state, err := openState(c.State)
	if err != nil {
		return err
	}
	// The client stops on its own when the server refuses it for good
	// (e.g. UNAUTHORIZED once its token expired): nothing more will come.
	stopped := make(chan struct{})
	var once sync.Once
	cl, err := e.dial(ctx, state, c.Timeout, func(s client.State) {
		if s == client.Closed {
			once.Do(func() { close(stopped) })
		}
	})
	if err != nil {
		return err
	}
	// Close sends the acknowledgements of what was handled.
	defer cl.Close()

	p := &printer{w: e.stdout, limit: c.Count, done: make(chan struct{})}
	for _, s := range c.parsed {
		opts := client.SubscribeOptions{Since: c.Since, OnGap: p.gap(s.session), OnShed: p.shed(s.session), OnError: p.refused(s)}
		if _, err := cl.Session(s.session).Subscribe(ctx, s.channel, opts, p.message(s.session)); err != nil {
			return subscribeError(s, err)
		}
		e.log.Info("subscribed", "session", s.session, "channel", s.channel)
	}
	if c.Stats {
		defer func() { p.writeStats(cl.Stats()) }()
	}
	if c.MigrateEvery > 0 {
		go migrateEvery(ctx, cl, e, c.MigrateEvery)
	}
	select {
	case <-p.done:
		return p.err
	case <-stopped:
		var pe *stream.Error
		if errors.As(cl.Err(), &pe) {
			return fmt.Errorf("the server closed the connection for good: %s: %s", pe.Code, pe.Message)
		}
		return fmt.Errorf("the client stopped: %v", cl.Err())
	case <-ctx.Done():
	}
	switch {
	case c.Count == 0:
		return nil
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("timed out: %d of %d messages arrived within %v", p.printed(), c.Count, c.Timeout)
	default:
		return fmt.Errorf("interrupted: %d of %d messages arrived", p.printed(), c.Count)
	}
}

func subscribeError(s subscription, err error) error {
	var pe *stream.Error
	switch {
	case errors.As(err, &pe):
		return fmt.Errorf("the server refused the subscription to %s: %s: %s", s.channel, pe.Code, pe.Message)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("timed out subscribing to %s", s.channel)
	default:
		return fmt.Errorf("cannot subscribe to %s: %w", s.channel, err)
	}
}

// messageLine is the JSON line of a message, for sub and history.
type messageLine struct {
	Session  string    `json:"session,omitempty"`
	Channel  string    `json:"channel"`
	Seq      uint64    `json:"seq"`
	Epoch    uint64    `json:"epoch"`
	Class    string    `json:"class"`
	Data     string    `json:"data"`
	Repaired bool      `json:"repaired"`
	ID       string    `json:"id"`
	From     string    `json:"from"`
	Time     time.Time `json:"time"`
}

func newMessageLine(session string, m client.Message) messageLine {
	class := "reliable"
	if m.Droppable {
		class = "droppable"
	}
	return messageLine{
		Session: session, Channel: m.Channel, Seq: m.Seq, Epoch: m.Epoch, Class: class, Data: string(m.Data),
		Repaired: m.Repaired, ID: m.ID, From: m.From, Time: m.Time.UTC(),
	}
}

// gapLine is the JSON line of seqs that will never be handed over.
type gapLine struct {
	Session string     `json:"session,omitempty"`
	Channel string     `json:"channel"`
	Gap     [2]*uint64 `json:"gap"` // [from, to]; to is null when unknown
	Reason  string     `json:"reason"`
	Epoch   uint64     `json:"epoch,omitempty"`
}

func newGapLine(session string, g client.Gap) gapLine {
	l := gapLine{Session: session, Channel: g.Channel, Gap: [2]*uint64{&g.From, nil}, Reason: g.Reason, Epoch: g.Epoch}
	if g.To != 0 {
		l.Gap[1] = &g.To
	}
	return l
}

// writeLine writes v as one JSON line with a single Write.
func writeLine(w io.Writer, v any) error {
	var b bytes.Buffer
	if err := json.NewEncoder(&b).Encode(v); err != nil {
		return err
	}
	_, err := w.Write(b.Bytes())
	return err
}

// printer prints what the handlers of every channel hand it, one line at a
// time, and counts messages up to limit (0: no limit).
type printer struct {
	w     io.Writer
	limit int
	done  chan struct{} // closed once limit messages were printed, or on err

	mu  sync.Mutex
	n   int
	err error // why printing stopped early
}

// stopped reports whether nothing more may be printed. Called with mu held.
func (p *printer) stopped() bool {
	return p.err != nil || (p.limit > 0 && p.n >= p.limit)
}

// write prints v, or records why it could not.
func (p *printer) write(v any) bool {
	if err := writeLine(p.w, v); err != nil {
		p.err = fmt.Errorf("cannot write to stdout: %w", err)
		close(p.done)
		return false
	}
	return true
}

// refused ends the run when a subscription ends on its own: the server
// refused to resume it after a reconnect (the channel would never deliver
// again), or a message could not be printed (the run is over already).
func (p *printer) refused(s subscription) func(error) {
	return func(err error) {
		p.mu.Lock()
		defer p.mu.Unlock()
		if !p.stopped() {
			p.err = subscribeError(s, err)
			close(p.done)
		}
	}
}

func (p *printer) printed() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

// errNotPrinted ends a subscription whose message was not printed (the
// count is reached, or stdout failed): the message stays unhandled, its
// position unsaved, so the next run gets it.
var errNotPrinted = errors.New("message not printed")

// message returns the handler of a session's channels.
func (p *printer) message(session string) client.Handler {
	return func(m client.Message) error {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.stopped() || !p.write(newMessageLine(session, m)) {
			return errNotPrinted
		}
		p.n++
		if p.n == p.limit {
			close(p.done)
		}
		return nil
	}
}

// shedLine says how many droppable messages the server shed for us.
type shedLine struct {
	Session string `json:"session,omitempty"`
	Channel string `json:"channel"`
	Shed    uint64 `json:"shed"`
}

func (p *printer) shed(session string) func(client.Shed) {
	return func(s client.Shed) {
		p.mu.Lock()
		defer p.mu.Unlock()
		if !p.stopped() {
			p.write(shedLine{Session: session, Channel: s.Channel, Shed: s.Count})
		}
	}
}

func (p *printer) gap(session string) func(client.Gap) error {
	return func(g client.Gap) error {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.stopped() || !p.write(newGapLine(session, g)) {
			return errNotPrinted
		}
		return nil
	}
}

// migrateEvery moves the client to a new local address every d until ctx
// ends: the next 127.0.0.x when the server is on IPv4 loopback (a new
// "interface"), otherwise a new port on any address.
func migrateEvery(ctx context.Context, cl *client.Client, e *env, d time.Duration) {
	host, _, _ := net.SplitHostPort(e.g.Server)
	loopback := net.ParseIP(host).IsLoopback() && net.ParseIP(host).To4() != nil
	t := time.NewTicker(d)
	defer t.Stop()
	for n := 2; ; n = n%250 + 2 {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		local := ":0"
		if loopback {
			local = fmt.Sprintf("127.0.0.%d:0", n)
		}
		if err := cl.Migrate(ctx, local); err != nil && ctx.Err() == nil {
			e.log.Warn("cannot move to a new network", "local", local, "err", err)
		}
	}
}

// statsLine is sub's last line with --stats.
type statsLine struct {
	Stats struct {
		Connects           uint64 `json:"connects"`
		Reconnects         uint64 `json:"reconnects"` // connections after the first, whatever the cause
		Used0RTT           uint64 `json:"used_0rtt"`
		Migrations         uint64 `json:"migrations"`
		MigrationFallbacks uint64 `json:"migration_fallbacks"`
	} `json:"stats"`
}

func (p *printer) writeStats(st client.Stats) {
	var l statsLine
	l.Stats.Connects, l.Stats.Used0RTT = st.Connects, st.Used0RTT
	l.Stats.Reconnects = max(st.Connects, 1) - 1
	l.Stats.Migrations, l.Stats.MigrationFallbacks = st.Migrations, st.MigrationFallbacks
	p.mu.Lock()
	defer p.mu.Unlock()
	writeLine(p.w, l)
}

// openState opens the --state file of handled positions; none (memory
// only) without one.
func openState(path string) (client.PositionStore, error) {
	if path == "" {
		return nil, nil
	}
	fs, err := client.OpenFileStore(path)
	if err != nil {
		return nil, fmt.Errorf("cannot use --state: %w", err)
	}
	return fs, nil
}
