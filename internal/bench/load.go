package bench

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quicpush/quicpush/certs"
	"github.com/quicpush/quicpush/client"
)

// publishFunc publishes message number idx; it returns once the server has
// taken it (quicpush: stored durably).
type publishFunc func(ctx context.Context, idx uint64, payload []byte) error

// system is a server under test as its load clients see it.
type system interface {
	// subscribe connects subscriber i; deliver gets the payload of every
	// message it receives, on one goroutine at a time.
	subscribe(ctx context.Context, i int, deliver func([]byte)) (closeFn func(), err error)
	publisher(ctx context.Context) (publishFunc, func(), error)
}

// newSystem returns the load clients' view of the server child p.
func newSystem(cfg *Config, p *serverProc, channel string) (system, error) {
	pool, err := certs.CAPool(p.ca)
	if err != nil {
		return nil, err
	}
	tlsConf := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	if p.kind == KindRaw {
		return rawSystem{addr: p.addr, tls: tlsConf, log: cfg.Logger, size: pushSize(channel, cfg.Size)}, nil
	}
	return quicpushSystem{addr: p.addr, tls: tlsConf, log: cfg.Logger, channel: channel}, nil
}

// startSystem starts a server child of kind and its load clients' view of
// it; stop ends the child.
func startSystem(cfg *Config, kind, channel string) (sys system, srv *serverProc, stop func(), err error) {
	srv, err = startServer(cfg, kind)
	if err != nil {
		return nil, nil, nil, err
	}
	stop = func() {
		if err := srv.close(); err != nil {
			cfg.Logger.Warn("server child", "kind", kind, "err", err)
		}
	}
	if sys, err = newSystem(cfg, srv, channel); err != nil {
		stop()
		return nil, nil, nil, err
	}
	return sys, srv, stop, nil
}

// quicpushSystem is the quicpush server through the Go SDK.
type quicpushSystem struct {
	addr    string
	tls     *tls.Config
	log     *slog.Logger
	channel string
}

func (s quicpushSystem) dial(ctx context.Context, user string) (*client.Client, error) {
	return client.Dial(ctx, s.addr, client.Config{
		TLSConfig: s.tls, Token: user, ClientID: "quicpush-bench", Logger: s.log, DialTimeout: dialTimeout,
	})
}

func (s quicpushSystem) subscribe(ctx context.Context, i int, deliver func([]byte)) (func(), error) {
	c, err := s.dial(ctx, "sub-"+strconv.Itoa(i))
	if err != nil {
		return nil, err
	}
	h := func(m client.Message) error {
		deliver(m.Data)
		return nil
	}
	if _, err := c.Session("bench").Subscribe(ctx, s.channel, client.SubscribeOptions{}, h); err != nil {
		c.Close()
		return nil, err
	}
	return func() { c.Close() }, nil
}

func (s quicpushSystem) publisher(ctx context.Context) (publishFunc, func(), error) {
	c, err := s.dial(ctx, "publisher")
	if err != nil {
		return nil, nil, err
	}
	sess := c.Session("bench")
	publish := func(ctx context.Context, idx uint64, payload []byte) error {
		_, err := sess.Publish(ctx, s.channel, payload, client.PublishOptions{ID: msgID(idx)})
		return err
	}
	return publish, func() { c.Close() }, nil
}

func msgID(idx uint64) string { return "m-" + strconv.FormatUint(idx, 10) }

// closeWait bounds how long closeAll waits for the clients to close: a
// client that does not would otherwise hold the bench forever.
const closeWait = time.Minute

// connectAll connects n subscribers, a few at a time: quic-go's accept
// queue holds 32 finished handshakes, and a burst beyond it is refused.
func connectAll(ctx context.Context, log *slog.Logger, n int, connect func(ctx context.Context, i int) (func(), error), progress func(done int)) (closeAll func(), err error) {
	const parallel = 16
	closers := make([]func(), n)
	closeAll = func() {
		var open atomic.Int64
		done := make(chan struct{})
		var wg sync.WaitGroup
		for _, c := range closers {
			if c != nil {
				open.Add(1)
				wg.Go(func() {
					c()
					open.Add(-1)
				})
			}
		}
		go func() {
			wg.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(closeWait):
			log.Error("clients did not close: not waiting for them", "open", open.Load(), "after", closeWait)
		}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		next atomic.Int64
		done atomic.Int64
		wg   sync.WaitGroup
	)
	for range min(parallel, n) {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n && ctx.Err() == nil; i = int(next.Add(1)) - 1 {
				c, err := connect(ctx, i)
				if err != nil {
					cancel(fmt.Errorf("connecting client %d of %d: %w", i+1, n, err))
					return
				}
				closers[i] = c
				progress(int(done.Add(1)))
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		closeAll()
		return nil, err
	}
	return closeAll, nil
}

// tracker counts the deliveries of numbered messages and their latency.
// A payload starts with the time the message was meant to be sent and its
// number, 8 bytes each.
type tracker struct {
	n          int
	deliveries atomic.Int64  // every delivery
	measured   atomic.Int64  // deliveries of measured messages
	from       atomic.Uint64 // the first measured message number
	subs       []*subTrack
	inFlight   []atomic.Pointer[flight] // by message number mod flightSlots
}

// flightSlots bounds the message numbers in flight at once. Publishes run
// concurrently, so messages do not finish in order: a publisher delayed by
// the scheduler may still wait for a message while many later ones are
// done. A slot is never taken over while its message is in flight (expect
// fails instead), and this many is far more than any run gets to.
const flightSlots = 1 << 16

type subTrack struct {
	last atomic.Uint64 // the highest message number received
	mu   sync.Mutex
	lat  []time.Duration // of measured messages
}

// flight is a message whose publisher waits for every subscriber to get it.
type flight struct {
	idx  uint64
	left atomic.Int64
	done chan struct{}
}

func newTracker(n int) *tracker {
	t := &tracker{n: n, subs: make([]*subTrack, n), inFlight: make([]atomic.Pointer[flight], flightSlots)}
	for i := range t.subs {
		t.subs[i] = &subTrack{}
	}
	t.from.Store(math.MaxUint64)
	return t
}

func stamp(payload []byte, idx uint64, at time.Time) {
	binary.BigEndian.PutUint64(payload, uint64(at.UnixNano()))
	binary.BigEndian.PutUint64(payload[8:], idx)
}

// deliver records subscriber i's receipt of payload.
func (t *tracker) deliver(i int, payload []byte) {
	now := time.Now()
	if len(payload) < 16 {
		return
	}
	sent := time.Unix(0, int64(binary.BigEndian.Uint64(payload)))
	idx := binary.BigEndian.Uint64(payload[8:])
	t.deliveries.Add(1)
	if s := t.subs[i]; idx > s.last.Load() {
		s.last.Store(idx) // only subscriber i's reader writes it
	}
	if idx >= t.from.Load() {
		t.measured.Add(1)
		s := t.subs[i]
		s.mu.Lock()
		s.lat = append(s.lat, now.Sub(sent))
		s.mu.Unlock()
	}
	if f := t.inFlight[idx%flightSlots].Load(); f != nil && f.idx == idx && f.left.Add(-1) == 0 {
		close(f.done)
	}
}

// missing describes the subscribers that have not received message idx
// (those whose highest received number is below it), for the error of a
// run that waited for it in vain.
func (t *tracker) missing(idx uint64) string {
	var behind []string
	for i, s := range t.subs {
		if last := s.last.Load(); last < idx {
			behind = append(behind, fmt.Sprintf("%d (last got %d)", i, last))
		}
	}
	if len(behind) > 5 {
		behind = append(behind[:5], fmt.Sprintf("and %d more", len(behind)-5))
	}
	return strings.Join(behind, ", ")
}

// expect registers message idx as in flight until every subscriber has it;
// the channel returned is closed then.
func (t *tracker) expect(idx uint64) (<-chan struct{}, error) {
	f := &flight{idx: idx, done: make(chan struct{})}
	f.left.Store(int64(t.n))
	old := t.inFlight[idx%flightSlots].Swap(f)
	if old != nil && old.left.Load() > 0 {
		return nil, fmt.Errorf("message %d still in flight when message %d was published", old.idx, idx)
	}
	return f.done, nil
}

// latencies returns the latencies of the measured messages, sorted.
func (t *tracker) latencies() []time.Duration {
	var all []time.Duration
	for _, s := range t.subs {
		s.mu.Lock()
		all = append(all, s.lat...)
		s.mu.Unlock()
	}
	slices.Sort(all)
	return all
}

// waitMeasured waits until want measured deliveries arrived, or until.
func (t *tracker) waitMeasured(ctx context.Context, want int64, until time.Time) {
	for t.measured.Load() < want && time.Now().Before(until) && sleep(ctx, 2*time.Millisecond) == nil {
	}
}

// loadPublisher publishes numbered messages with a pool of workers.
type loadPublisher struct {
	cfg     *Config
	publish publishFunc
	tr      *tracker
	next    atomic.Uint64 // the last message number handed out
}

// publishGrace bounds how long a publish may take after the end of the
// measuring time.
const publishGrace = 30 * time.Second

// run publishes until `until`, or until limit messages (0: no limit) were
// published, and returns how many were.
func (p *loadPublisher) run(ctx context.Context, until time.Time, limit int) (int64, error) {
	ctx, cancel := context.WithDeadline(ctx, until.Add(publishGrace))
	defer cancel()
	last := uint64(math.MaxUint64)
	if limit > 0 {
		last = p.next.Load() + uint64(limit)
	}
	if p.cfg.Rate > 0 {
		return p.scheduled(ctx, until, last)
	}
	return p.windowed(ctx, until, last)
}

// windowed runs Window workers, each publishing its next message once
// every subscriber has its previous one.
func (p *loadPublisher) windowed(ctx context.Context, until time.Time, last uint64) (int64, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		n  atomic.Int64
		wg sync.WaitGroup
		// stalled is the first message found undelivered at the
		// deadline: the run's error says which, and who lacks it.
		stalledMu sync.Mutex
		stalled   uint64
	)
	for range p.cfg.Window {
		wg.Go(func() {
			for time.Now().Before(until) && ctx.Err() == nil {
				idx := p.next.Add(1)
				if idx > last {
					return
				}
				delivered, err := p.tr.expect(idx)
				if err == nil {
					err = p.send(ctx, idx, time.Now())
				}
				if err != nil {
					cancel(err)
					return
				}
				n.Add(1)
				select {
				case <-delivered:
				case <-ctx.Done():
					if errors.Is(ctx.Err(), context.DeadlineExceeded) {
						stalledMu.Lock()
						if stalled == 0 || idx < stalled {
							stalled = idx
						}
						stalledMu.Unlock()
					}
					cancel(fmt.Errorf("message %d did not reach every subscriber", idx))
					return
				}
			}
		})
	}
	wg.Wait()
	if stalled != 0 {
		return n.Load(), fmt.Errorf("message %d had not reached every subscriber %v after the publishing ended; missing at subscriber %s",
			stalled, publishGrace, p.tr.missing(stalled))
	}
	return n.Load(), context.Cause(ctx)
}

// scheduled publishes at Rate with Publishers workers. A message carries
// the time it was scheduled for, not the time a worker got to it, so a
// publisher that falls behind shows in the latency.
func (p *loadPublisher) scheduled(ctx context.Context, until time.Time, last uint64) (int64, error) {
	type job struct {
		idx uint64
		at  time.Time
	}
	jobs := make(chan job)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		n  atomic.Int64
		wg sync.WaitGroup
	)
	for range p.cfg.Publishers {
		wg.Go(func() {
			for j := range jobs {
				if err := p.send(ctx, j.idx, j.at); err != nil {
					cancel(err)
					return
				}
				n.Add(1)
			}
		})
	}
	start := time.Now()
	interval := float64(time.Second) / p.cfg.Rate
loop:
	for i := 0; ; i++ {
		at := start.Add(time.Duration(float64(i) * interval))
		if !at.Before(until) || sleep(ctx, time.Until(at)) != nil {
			break
		}
		idx := p.next.Add(1)
		if idx > last {
			break
		}
		select {
		case jobs <- job{idx, at}:
		case <-ctx.Done():
			break loop
		}
	}
	close(jobs)
	wg.Wait()
	return n.Load(), context.Cause(ctx)
}

func (p *loadPublisher) send(ctx context.Context, idx uint64, at time.Time) error {
	payload := make([]byte, p.cfg.Size)
	stamp(payload, idx, at)
	if err := p.publish(ctx, idx, payload); err != nil {
		return fmt.Errorf("publishing message %d: %w", idx, err)
	}
	return nil
}
