package netem_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/quicpush/quicpush/certs/certstest"
	"github.com/quicpush/quicpush/internal/netem"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	waitFor = 5 * time.Second
	poll    = time.Millisecond
	// batch is how many packets a test sends before waiting for the relay
	// to read them, well below what a default socket buffer holds.
	batch = 32
)

// received is a packet a testServer got.
type received struct {
	index int
	from  netip.AddrPort
	at    time.Time
}

// testServer is a UDP server on 127.0.0.1 that records every packet and,
// if it echoes, sends it back.
type testServer struct {
	conn *net.UDPConn
	mu   sync.Mutex
	got  []received
}

func startServer(t *testing.T, echo bool) *testServer {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	s := &testServer{conn: conn}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64<<10)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.got = append(s.got, received{index: indexOf(buf[:n]), from: from, at: time.Now()})
			s.mu.Unlock()
			if echo {
				conn.WriteToUDPAddrPort(buf[:n], from)
			}
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
	return s
}

func (s *testServer) addr() string { return s.conn.LocalAddr().String() }

func (s *testServer) received() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

func (s *testServer) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.got)
}

func (s *testServer) last() received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got[len(s.got)-1]
}

func startRelay(t testing.TB, cfg netem.Config) *netem.Relay {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	r, err := netem.Start(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { r.Close() })
	return r
}

func dialRelay(t testing.TB, r *netem.Relay) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp", nil, r.Addr().(*net.UDPAddr))
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func packet(i, size int) []byte {
	b := make([]byte, max(size, 4))
	binary.BigEndian.PutUint32(b, uint32(i))
	return b
}

func indexOf(b []byte) int {
	if len(b) < 4 {
		return -1
	}
	return int(binary.BigEndian.Uint32(b))
}

func write(t testing.TB, c *net.UDPConn, i int) {
	_, err := c.Write(packet(i, 4))
	require.NoError(t, err)
}

// readIndex reads one packet within d; ok is false on timeout.
func readIndex(t testing.TB, c *net.UDPConn, d time.Duration) (int, bool) {
	buf := make([]byte, 64<<10)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(d)))
	n, err := c.Read(buf)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return 0, false
	}
	require.NoError(t, err)
	return indexOf(buf[:n]), true
}

// sendPaced sends packets first..first+n-1, batch by batch, each once the
// relay has read the previous one, so that no socket buffer overflows.
func sendPaced(t *testing.T, r *netem.Relay, c *net.UDPConn, first, n int) {
	t.Helper()
	base := r.Stats().Uplink.In
	for i := 0; i < n; i++ {
		write(t, c, first+i)
		if (i+1)%batch == 0 || i == n-1 {
			want := base + uint64(i+1)
			require.Eventually(t, func() bool { return r.Stats().Uplink.In >= want }, waitFor, poll)
		}
	}
}

// ping sends i and waits up to d for its echo, skipping stale echoes.
func ping(t testing.TB, c *net.UDPConn, i int, d time.Duration) bool {
	write(t, c, i)
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		got, ok := readIndex(t, c, time.Until(deadline))
		if ok && got == i {
			return true
		}
	}
	return false
}

func TestPassThrough(t *testing.T) {
	srv := startServer(t, true)
	r := startRelay(t, netem.Config{Upstream: srv.addr()})
	clients := []*net.UDPConn{dialRelay(t, r), dialRelay(t, r)}
	const n = 320
	for i := 0; i < n; i += batch {
		for _, c := range clients {
			for j := range batch {
				write(t, c, i+j)
			}
		}
		// Each client gets its own echoes back, once and in order.
		for _, c := range clients {
			for j := range batch {
				got, ok := readIndex(t, c, waitFor)
				require.True(t, ok)
				require.Equal(t, i+j, got)
			}
		}
	}
	bySource := map[netip.AddrPort][]int{}
	for _, p := range srv.received() {
		bySource[p.from] = append(bySource[p.from], p.index)
	}
	require.Len(t, bySource, 2, "one upstream port per client")
	for _, indices := range bySource {
		require.Len(t, indices, n)
		require.True(t, slices.IsSorted(indices))
	}
	want := netem.Stats{
		Uplink:   netem.DirStats{In: 2 * n, Out: 2 * n},
		Downlink: netem.DirStats{In: 2 * n, Out: 2 * n},
		Mappings: 2,
	}
	// The relay may count a packet sent only after its echo is back.
	require.EventuallyWithT(t, func(c *assert.CollectT) { assert.Equal(c, want, r.Stats()) }, waitFor, poll)
}

// lostIndices sends n packets through a relay with 30% uplink loss and
// returns those the server did not get.
func lostIndices(t *testing.T, seed int64, n int) []int {
	srv := startServer(t, false)
	r := startRelay(t, netem.Config{Upstream: srv.addr(), Seed: seed, Uplink: netem.Link{Loss: 0.3}})
	require.Equal(t, seed, r.Seed())
	sendPaced(t, r, dialRelay(t, r), 0, n)
	require.Eventually(t, func() bool {
		st := r.Stats().Uplink
		return st.Out+st.DroppedLoss == uint64(n) && uint64(srv.count()) == st.Out
	}, waitFor, poll)

	arrived := make([]bool, n)
	for _, p := range srv.received() {
		require.False(t, arrived[p.index], "packet %d twice", p.index)
		arrived[p.index] = true
	}
	var lost []int
	for i, ok := range arrived {
		if !ok {
			lost = append(lost, i)
		}
	}
	st := r.Stats().Uplink
	require.Equal(t, uint64(n), st.In)
	require.Equal(t, uint64(len(lost)), st.DroppedLoss)
	return lost
}

func TestLossReplaysWithSeed(t *testing.T) {
	const n = 2000
	lost := lostIndices(t, 42, n)
	require.InDelta(t, 0.3, float64(len(lost))/n, 0.05)
	require.Equal(t, lost, lostIndices(t, 42, n), "same seed, same losses")
	require.NotEqual(t, lost, lostIndices(t, 43, n), "another seed, other losses")
}

func TestDelayAndJitter(t *testing.T) {
	srv := startServer(t, true)
	l := netem.Link{Delay: 50 * time.Millisecond, Jitter: 20 * time.Millisecond}
	r := startRelay(t, netem.Config{Upstream: srv.addr(), Uplink: l, Downlink: l})
	c := dialRelay(t, r)
	const n = 30
	sent := make([]time.Time, n)
	for i := range n {
		sent[i] = time.Now()
		write(t, c, i)
	}
	var rtts []time.Duration
	for range n {
		i, ok := readIndex(t, c, waitFor)
		require.True(t, ok)
		rtts = append(rtts, time.Since(sent[i]))
	}
	// Each way is 30..70 ms. Timers fire late, never early; how late
	// depends on the machine's load, hence the generous upper bound.
	require.GreaterOrEqual(t, slices.Min(rtts), 2*30*time.Millisecond-time.Millisecond)
	require.Less(t, slices.Max(rtts), 2*70*time.Millisecond+300*time.Millisecond)
}

func TestDuplicate(t *testing.T) {
	srv := startServer(t, false)
	r := startRelay(t, netem.Config{Upstream: srv.addr(), Uplink: netem.Link{Duplicate: 1}})
	const n = 100
	sendPaced(t, r, dialRelay(t, r), 0, n)
	require.Eventually(t, func() bool { return srv.count() == 2*n && r.Stats().Uplink.Out == 2*n }, waitFor, poll)
	times := make([]int, n)
	for _, p := range srv.received() {
		times[p.index]++
	}
	for i, k := range times {
		require.Equal(t, 2, k, "packet %d", i)
	}
	require.Equal(t, uint64(n), r.Stats().Uplink.Duplicated)
}

func TestReorder(t *testing.T) {
	srv := startServer(t, false)
	r := startRelay(t, netem.Config{
		Upstream: srv.addr(),
		Seed:     1,
		Uplink:   netem.Link{Reorder: 0.5, ReorderDelay: 20 * time.Millisecond},
	})
	const n = 200
	sendPaced(t, r, dialRelay(t, r), 0, n)
	require.Eventually(t, func() bool { return srv.count() == n }, waitFor, poll)
	var order []int
	for _, p := range srv.received() {
		order = append(order, p.index)
	}
	require.False(t, slices.IsSorted(order), "some packets overtaken")
	slices.Sort(order)
	require.Equal(t, n, len(slices.Compact(order)), "each packet once")
	require.InDelta(t, n/2, r.Stats().Uplink.Reordered, n/5)
}

func TestBandwidth(t *testing.T) {
	srv := startServer(t, false)
	const rate, size, n = 200_000, 1000, 60 // 5 ms per packet
	r := startRelay(t, netem.Config{
		Upstream: srv.addr(),
		Uplink:   netem.Link{Bandwidth: rate, QueueBytes: 20 * size},
	})
	c := dialRelay(t, r)
	for i := range n { // a burst the queue cannot hold
		_, err := c.Write(packet(i, size))
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool {
		st := r.Stats().Uplink
		return st.Out+st.DroppedQueue == n && uint64(srv.count()) == st.Out
	}, waitFor, poll)
	st := r.Stats().Uplink
	require.GreaterOrEqual(t, st.Out, uint64(15))
	require.Greater(t, st.DroppedQueue, uint64(30))
	got := srv.received()
	spread := got[len(got)-1].at.Sub(got[0].at)
	// Paced, not a burst (which would arrive within a millisecond or two):
	// at least half the ideal spread, so a loaded machine's late timers
	// do not fail the test.
	require.GreaterOrEqual(t, spread, time.Duration(len(got)-1)*5*time.Millisecond/2, "paced at the link's rate")
}

func TestBlackout(t *testing.T) {
	srv := startServer(t, true)
	r := startRelay(t, netem.Config{Upstream: srv.addr()})
	c := dialRelay(t, r)
	require.True(t, ping(t, c, 0, waitFor))

	// Nothing passes during a blackout; ending it restores traffic at once.
	r.Blackout(time.Hour)
	sendPaced(t, r, c, 1, 10)
	require.Equal(t, uint64(10), r.Stats().Uplink.DroppedBlackout)
	require.Equal(t, 1, srv.count())
	r.Blackout(0)
	require.True(t, ping(t, c, 11, waitFor))

	// A timed blackout ends by itself.
	start := time.Now()
	r.Blackout(200 * time.Millisecond)
	i := 12
	for !ping(t, c, i, 10*time.Millisecond) {
		require.Less(t, time.Since(start), waitFor)
		i++
	}
	require.GreaterOrEqual(t, time.Since(start), 200*time.Millisecond)

	// A packet in flight when a blackout starts is lost as well.
	require.NoError(t, r.Update(func(c *netem.Config) { c.Uplink.Delay = 100 * time.Millisecond }))
	before := r.Stats().Uplink
	served := srv.count()
	sendPaced(t, r, c, 1000, 1)
	r.Blackout(time.Hour)
	require.Eventually(t, func() bool {
		return r.Stats().Uplink.DroppedBlackout == before.DroppedBlackout+1
	}, waitFor, poll)
	require.Equal(t, served, srv.count())

	r.Heal()
	require.True(t, ping(t, c, 1001, waitFor))
}

func TestScheduledBlackout(t *testing.T) {
	srv := startServer(t, true)
	r := startRelay(t, netem.Config{
		Upstream:      srv.addr(),
		BlackoutEvery: 100 * time.Millisecond,
		BlackoutFor:   50 * time.Millisecond,
	})
	c := dialRelay(t, r)
	// Probe until a blackout has dropped something and traffic passed again.
	start := time.Now()
	for i := 0; ; i++ {
		require.Less(t, time.Since(start), waitFor)
		dropped := r.Stats().Uplink.DroppedBlackout
		if ping(t, c, i, 5*time.Millisecond) && dropped > 0 {
			break
		}
	}
}

func TestRebind(t *testing.T) {
	srv := startServer(t, true)
	r := startRelay(t, netem.Config{Upstream: srv.addr()})
	c := dialRelay(t, r)
	require.True(t, ping(t, c, 0, waitFor))
	oldPort := srv.last().from

	require.NoError(t, r.Rebind())
	require.True(t, ping(t, c, 1, waitFor), "replies reach the client after a rebind")
	newPort := srv.last().from
	require.NotEqual(t, oldPort.Port(), newPort.Port())
	require.Equal(t, uint64(1), r.Stats().Rebinds)

	// The old mapping is gone: only what the server sends to the new port arrives.
	downIn := r.Stats().Downlink.In
	_, err := srv.conn.WriteToUDPAddrPort(packet(100, 4), oldPort)
	require.NoError(t, err)
	_, err = srv.conn.WriteToUDPAddrPort(packet(101, 4), newPort)
	require.NoError(t, err)
	got, ok := readIndex(t, c, waitFor)
	require.True(t, ok)
	require.Equal(t, 101, got)
	require.Equal(t, downIn+1, r.Stats().Downlink.In)
}

func TestScheduledRebind(t *testing.T) {
	srv := startServer(t, true)
	r := startRelay(t, netem.Config{Upstream: srv.addr(), RebindEvery: 30 * time.Millisecond})
	c := dialRelay(t, r)
	ports := map[uint16]bool{}
	start := time.Now()
	for i := 0; len(ports) < 3; i++ {
		require.Less(t, time.Since(start), waitFor)
		// An echo in flight across a rebind is lost, like behind a NAT.
		if ping(t, c, i, 20*time.Millisecond) {
			ports[srv.last().from.Port()] = true
		}
	}
	require.GreaterOrEqual(t, r.Stats().Rebinds, uint64(2))

	require.NoError(t, r.Update(func(c *netem.Config) { c.RebindEvery = 0 }))
	rebinds := r.Stats().Rebinds
	require.True(t, ping(t, c, 1<<20, waitFor))
	require.LessOrEqual(t, r.Stats().Rebinds, rebinds+1, "at most one already due")
}

func TestMappingExpires(t *testing.T) {
	srv := startServer(t, true)
	r := startRelay(t, netem.Config{Upstream: srv.addr(), MappingTimeout: 40 * time.Millisecond})
	c := dialRelay(t, r)
	require.True(t, ping(t, c, 0, waitFor))
	oldPort := srv.last().from.Port()

	require.Eventually(t, func() bool { return r.Stats().Mappings == 0 }, waitFor, poll)
	require.True(t, ping(t, c, 1, waitFor), "a new mapping on the next packet")
	require.NotEqual(t, oldPort, srv.last().from.Port())
}

func TestUpdate(t *testing.T) {
	srv := startServer(t, true)
	r := startRelay(t, netem.Config{Upstream: srv.addr(), Uplink: netem.Link{Loss: 1}})
	c := dialRelay(t, r)
	sendPaced(t, r, c, 0, 5)
	require.Equal(t, uint64(5), r.Stats().Uplink.DroppedLoss)

	require.Error(t, r.Update(func(c *netem.Config) { c.Downlink.Loss = 1.5 }))
	require.Error(t, r.Update(func(c *netem.Config) { c.Upstream = "127.0.0.1:1" }))
	require.Error(t, r.Update(func(c *netem.Config) { c.BlackoutEvery = time.Second }))
	require.NoError(t, r.Update(func(c *netem.Config) { c.Uplink.Loss = 0 }))
	require.True(t, ping(t, c, 5, waitFor))
}

func TestStartRejectsBadConfig(t *testing.T) {
	for name, cfg := range map[string]netem.Config{
		"no upstream":   {},
		"negative loss": {Upstream: "127.0.0.1:1", Uplink: netem.Link{Loss: -0.1}},
		"NaN duplicate": {Upstream: "127.0.0.1:1", Downlink: netem.Link{Duplicate: nan()}},
		"blackout":      {Upstream: "127.0.0.1:1", BlackoutEvery: time.Second, BlackoutFor: time.Second},
		"listen":        {Upstream: "127.0.0.1:1", Listen: "nonsense"},
	} {
		_, err := netem.Start(context.Background(), cfg)
		require.Error(t, err, name)
	}
}

func nan() float64 {
	zero := 0.0
	return zero / zero
}

func TestQUICThroughRelay(t *testing.T) {
	serverTLS, clientTLS := certstest.Configs(t, "netem-test")
	ln, err := quic.ListenAddr("127.0.0.1:0", serverTLS, nil)
	require.NoError(t, err)
	defer ln.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// The server answers a stream with the SHA-256 of what it read.
	var serverGot atomic.Int64
	served := make(chan error, 1)
	go func() {
		served <- func() error {
			conn, err := ln.Accept(ctx)
			if err != nil {
				return err
			}
			defer conn.CloseWithError(0, "")
			str, err := conn.AcceptStream(ctx)
			if err != nil {
				return err
			}
			h := sha256.New()
			buf := make([]byte, 32<<10)
			for {
				n, err := str.Read(buf)
				h.Write(buf[:n])
				serverGot.Add(int64(n))
				if err == io.EOF {
					break
				}
				if err != nil {
					return err
				}
			}
			if _, err := str.Write(h.Sum(nil)); err != nil {
				return err
			}
			if err := str.Close(); err != nil {
				return err
			}
			<-conn.Context().Done() // the client closes once it has the answer
			return nil
		}()
	}()

	weak := netem.Link{Loss: 0.05, Delay: 20 * time.Millisecond, Reorder: 0.05, Duplicate: 0.01}
	r := startRelay(t, netem.Config{Upstream: ln.Addr().String(), Seed: 7, Uplink: weak, Downlink: weak})
	conn, err := quic.DialAddr(ctx, r.Addr().String(), clientTLS, nil)
	require.NoError(t, err)
	defer conn.CloseWithError(0, "")
	str, err := conn.OpenStreamSync(ctx)
	require.NoError(t, err)

	data := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{1}).Read(data)
	wrote := make(chan error, 1)
	go func() {
		_, err := str.Write(data)
		if err == nil {
			err = str.Close()
		}
		wrote <- err
	}()

	// One NAT rebinding halfway: quic-go follows it (a third would stall).
	require.Eventually(t, func() bool { return serverGot.Load() >= int64(len(data)/2) }, 10*time.Second, poll)
	require.NoError(t, r.Rebind())

	require.NoError(t, <-wrote)
	sum, err := io.ReadAll(str)
	require.NoError(t, err)
	want := sha256.Sum256(data)
	require.True(t, bytes.Equal(want[:], sum), "1 MiB arrived intact")
	require.Equal(t, int64(len(data)), serverGot.Load())
	require.NoError(t, conn.CloseWithError(0, ""))
	require.NoError(t, <-served)

	st := r.Stats()
	t.Logf("seed %d: %+v", r.Seed(), st)
	require.Equal(t, uint64(1), st.Rebinds)
	require.Positive(t, st.Uplink.DroppedLoss+st.Downlink.DroppedLoss)
	require.Positive(t, st.Uplink.Reordered+st.Downlink.Reordered)
}

func TestCloseStopsEverything(t *testing.T) {
	srv := startServer(t, true)
	leaks := goleak.IgnoreCurrent()

	l := netem.Link{Delay: 50 * time.Millisecond, Jitter: 10 * time.Millisecond, Duplicate: 0.5}
	r, err := netem.Start(context.Background(), netem.Config{
		Upstream:      srv.addr(),
		Uplink:        l,
		Downlink:      l,
		RebindEvery:   10 * time.Millisecond,
		BlackoutEvery: 40 * time.Millisecond,
		BlackoutFor:   10 * time.Millisecond,
		Logger:        slog.New(slog.DiscardHandler),
	})
	require.NoError(t, err)
	for c := range 3 {
		conn, err := net.DialUDP("udp", nil, r.Addr().(*net.UDPAddr))
		require.NoError(t, err)
		for i := range 20 {
			write(t, conn, 100*c+i)
		}
		require.NoError(t, conn.Close())
	}
	require.Eventually(t, func() bool { return r.Stats().Uplink.In == 60 }, waitFor, poll)
	require.NoError(t, r.Close())
	goleak.VerifyNone(t, leaks)
	require.NoError(t, r.Close(), "idempotent")
	require.ErrorIs(t, r.Rebind(), net.ErrClosed)

	// Ending the context stops the relay as well.
	ctx, cancel := context.WithCancel(context.Background())
	r, err = netem.Start(ctx, netem.Config{Upstream: srv.addr(), Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	require.True(t, ping(t, dialRelay(t, r), 0, waitFor))
	cancel()
	goleak.VerifyNone(t, leaks)
	require.NoError(t, r.Close())
}

func BenchmarkRelay(b *testing.B) {
	srv, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(b, err)
	defer srv.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := srv.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			srv.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	r := startRelay(b, netem.Config{Upstream: srv.LocalAddr().String(), Logger: slog.New(slog.DiscardHandler)})
	c := dialRelay(b, r)

	// Keep a window of echoes in flight; each round trip crosses the relay twice.
	const window = 16
	msg := packet(0, 100)
	buf := make([]byte, 2048)
	require.NoError(b, c.SetReadDeadline(time.Now().Add(time.Minute)))
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if n++; n > window {
			if _, err := c.Read(buf); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(2*float64(n)/b.Elapsed().Seconds(), "pkts/s")
}
