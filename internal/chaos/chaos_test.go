package chaos

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/certs"
	"github.com/quicpush/quicpush/client"
	"github.com/quicpush/quicpush/internal/netem"
)

var (
	full    = flag.Bool("chaos.full", false, "run the full matrix (loss 0/5/20/40%, more messages)")
	outFile = flag.String("chaos.out", "", "write the cells' results as JSON to this file")
)

// The binaries under test, built once by TestMain.
var bin struct{ quicpushd, quicpush string }

func TestMain(m *testing.M) {
	if spec := os.Getenv(criticalServerEnv); spec != "" {
		os.Exit(serveCritical(spec))
	}
	flag.Parse()
	dir, err := os.MkdirTemp("", "quicpush-chaos")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin.quicpushd, bin.quicpush = filepath.Join(dir, "quicpushd"), filepath.Join(dir, "quicpush")
	for out, pkg := range map[string]string{bin.quicpushd: "../../cmd/quicpushd", bin.quicpush: "../../cmd/quicpush"} {
		if b, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go build %s: %v\n%s", pkg, err, b)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// disruption is what happens to the network, or to a process, in a cell.
type disruption string

const (
	natRebinding disruption = "nat-rebinding"  // the relay moves the clients' ports every 2 s
	migration    disruption = "migration"      // the subscriber changes networks every 2 s
	blackout     disruption = "blackout-3s"    // nothing passes for 3 s
	serverKill   disruption = "server-sigkill" // quicpushd is killed and restarted on its data
	clientKill   disruption = "client-sigkill" // the subscriber is killed and restarted from its state
)

var disruptions = []disruption{natRebinding, migration, blackout, serverKill, clientKill}

// result is one cell's row in the table.
type result struct {
	Loss       float64 `json:"loss_pct"`
	Disruption string  `json:"disruption"`
	Expected   int     `json:"expected"`
	Delivered  int     `json:"delivered"`
	Duplicates int     `json:"duplicates"`
	P50Ms      float64 `json:"p50_ms"`
	P99Ms      float64 `json:"p99_ms"`
	// For the cells with one heal (blackout end, restart): how long after
	// it the subscriber had every message acknowledged before it, and how
	// long until it handed over anything again. -1: no single heal.
	RecoveryMs float64 `json:"heal_to_repaired_ms"`
	ResumeMs   float64 `json:"heal_to_first_delivery_ms"`
	// The subscriber's network: path migrations, migrations that fell back
	// to a new connection, and every connection after the first.
	Migrations  uint64  `json:"migrations"`
	Fallbacks   uint64  `json:"migration_fallbacks"`
	Reconnects  uint64  `json:"reconnects"`
	Used0RTT    uint64  `json:"used_0rtt"`
	DurationSec float64 `json:"duration_s"`
}

func TestChaos(t *testing.T) {
	losses := []float64{0, 20}
	perChannel, rate := 60, 40.0
	if *full {
		losses = []float64{0, 5, 20, 40}
		perChannel, rate = 300, 100
	}
	var results []result
	for _, loss := range losses {
		for _, d := range disruptions {
			t.Run(fmt.Sprintf("loss=%v%%/%s", loss, d), func(t *testing.T) {
				r := runCell(t, loss, d, perChannel, rate)
				results = append(results, r)
				t.Logf("delivered %d/%d, duplicates %d, p50 %.0f ms, p99 %.0f ms, heal->repaired %.0f ms, heal->first delivery %.0f ms, migrations %d (fallbacks %d), reconnects %d (0-RTT %d)",
					r.Delivered, r.Expected, r.Duplicates, r.P50Ms, r.P99Ms, r.RecoveryMs, r.ResumeMs, r.Migrations, r.Fallbacks, r.Reconnects, r.Used0RTT)
			})
		}
	}
	printTable(t, results)
	if *outFile != "" {
		b, _ := json.MarshalIndent(results, "", "  ")
		require.NoError(t, os.WriteFile(*outFile, b, 0o644))
	}
}

func printTable(t *testing.T, rs []result) {
	var b strings.Builder
	b.WriteString("\n| loss | disruption | delivered | dups | p50 ms | p99 ms | heal->repaired ms | heal->first delivery ms | migrations (fallbacks) | reconnects (0-RTT) |\n|---|---|---|---|---|---|---|---|---|---|\n")
	ms := func(v float64) string {
		if v < 0 {
			return "-"
		}
		return fmt.Sprintf("%.0f", v)
	}
	for _, r := range rs {
		fmt.Fprintf(&b, "| %v%% | %s | %d/%d | %d | %.0f | %.0f | %s | %s | %d (%d) | %d (%d) |\n",
			r.Loss, r.Disruption, r.Delivered, r.Expected, r.Duplicates, r.P50Ms, r.P99Ms, ms(r.RecoveryMs), ms(r.ResumeMs),
			r.Migrations, r.Fallbacks, r.Reconnects, r.Used0RTT)
	}
	t.Log(b.String())
}

var channels = []string{"room/quiz", "room/commands"}

// runCell publishes perChannel messages on each channel at rate msgs/s,
// straight to the server, to a subscriber behind the relay while the
// disruption happens, then waits until the subscriber has every one, and
// checks exactly once, in order.
func runCell(t *testing.T, loss float64, d disruption, perChannel int, rate float64) result {
	start := time.Now()
	dir := t.TempDir()
	srv := startServer(t, filepath.Join(dir, "data"), freeUDP(t), freeTCP(t))
	link := netem.Link{Loss: loss / 100, Delay: 25 * time.Millisecond, Jitter: 10 * time.Millisecond, Reorder: 0.05, Duplicate: 0.01}
	relayCfg := netem.Config{Upstream: srv.addr, Uplink: link, Downlink: link, Seed: int64(loss*100) + int64(len(d)),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if d == natRebinding {
		relayCfg.RebindEvery = 2 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	relay, err := netem.Start(ctx, relayCfg)
	require.NoError(t, err)
	defer relay.Close()

	rec := newDeliveries()
	state := filepath.Join(dir, "sub-state.json")
	subArgs := []string{"--since", "0", "--stats"}
	if d == migration {
		subArgs = append(subArgs, "--migrate-every", "2s")
	}
	sub := startSub(t, relay.Addr().String(), srv.ca, state, rec, subArgs...)

	// The teacher is on a good network; the students' side is the bad one.
	pub := dialPublisher(t, srv.addr, srv.ca)
	acked := newAcks()
	published := make(chan struct{})
	total := perChannel * len(channels)
	go func() {
		defer close(published)
		tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
		defer tick.Stop()
		for i := 0; i < total; i++ {
			<-tick.C
			ch := channels[i%len(channels)]
			data := strconv.FormatInt(time.Now().UnixNano(), 10)
			pctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			res, err := pub.Session("teacher").Publish(pctx, ch, []byte(data), client.PublishOptions{})
			cancel()
			if err != nil {
				t.Errorf("publish %d to %s: %v", i, ch, err)
				return
			}
			acked.add(ch, res.Seq)
		}
	}()

	// The disruption, a third of the way through the publishing.
	var healAt time.Time
	waitFor(t, func() bool { return acked.count() >= total/3 }, 2*time.Minute, "publishing stalled before the disruption")
	switch d {
	case blackout:
		relay.Blackout(3 * time.Second)
		healAt = time.Now().Add(3 * time.Second)
	case serverKill:
		srv.kill(t)
		srv = startServer(t, srv.data, srv.addr, srv.admin)
		healAt = time.Now()
	case clientKill:
		sub.kill(t)
		sub = startSub(t, relay.Addr().String(), srv.ca, state, rec, subArgs...)
		healAt = time.Now()
	}
	<-published
	require.False(t, t.Failed())
	deadline := time.Minute
	if *full {
		deadline = 4 * time.Minute
	}
	waitFor(t, func() bool { return rec.unique() >= total }, deadline, "the subscriber did not get every message")
	stats := sub.stop(t)
	pub.Close()
	srv.stop(t)

	r := result{Loss: loss, Disruption: string(d), Expected: total, RecoveryMs: -1, ResumeMs: -1,
		Migrations: stats.Migrations, Fallbacks: stats.Fallbacks, Reconnects: stats.Reconnects, Used0RTT: stats.Used0RTT}
	r.Delivered, r.Duplicates = rec.check(t, acked, d == clientKill)
	r.P50Ms, r.P99Ms = rec.latencyPercentiles()
	if !healAt.IsZero() {
		r.RecoveryMs = max(0, float64(rec.caughtUp(acked.before(healAt)).Sub(healAt).Milliseconds()))
		r.ResumeMs = float64(rec.firstAfter(healAt).Sub(healAt).Milliseconds())
	}
	r.DurationSec = time.Since(start).Seconds()
	return r
}

// deliveries records what the subscriber printed, run by run (a killed
// subscriber's successor is a new run).
type deliveries struct {
	mu       sync.Mutex
	runs     []map[string][]uint64 // per run, per channel: seqs in print order
	first    map[string]map[uint64]time.Time
	latency  []time.Duration
	gapLines []string
}

func newDeliveries() *deliveries {
	d := &deliveries{first: map[string]map[uint64]time.Time{}}
	for _, ch := range channels {
		d.first[ch] = map[uint64]time.Time{}
	}
	return d
}

func (d *deliveries) newRun() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.runs = append(d.runs, map[string][]uint64{})
	return len(d.runs) - 1
}

func (d *deliveries) add(run int, ch string, seq uint64, data string, at time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.runs[run][ch] = append(d.runs[run][ch], seq)
	if _, seen := d.first[ch][seq]; !seen {
		d.first[ch][seq] = at
		if ns, err := strconv.ParseInt(data, 10, 64); err == nil {
			d.latency = append(d.latency, at.Sub(time.Unix(0, ns)))
		}
	}
}

func (d *deliveries) unique() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, m := range d.first {
		n += len(m)
	}
	return n
}

// check asserts exactly once and in order: every acknowledged seq arrived,
// nothing else did, each run printed increasing seqs, and a restarted
// subscriber began no earlier than where the killed one stopped (it may
// print the last message again when it was killed after printing it but
// before saving its position: the documented crash duplicate).
func (d *deliveries) check(t *testing.T, acked *acks, crashAllowed bool) (delivered, duplicates int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	require.Empty(t, d.gapLines, "no gap may be reported")
	for _, ch := range channels {
		want := acked.seqs(ch)
		got := make([]uint64, 0, len(d.first[ch]))
		for seq := range d.first[ch] {
			got = append(got, seq)
		}
		slices.Sort(got)
		require.Equal(t, want, got, "channel %s: the set of seqs handed over", ch)
		delivered += len(got)
		var last uint64
		for i, run := range d.runs {
			for j, seq := range run[ch] {
				switch {
				case seq > last:
				case seq == last && j == 0 && i > 0 && crashAllowed:
					duplicates++
				default:
					t.Fatalf("channel %s run %d: seq %d after %d", ch, i, seq, last)
				}
				last = seq
			}
		}
	}
	return delivered, duplicates
}

func (d *deliveries) latencyPercentiles() (p50, p99 float64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.latency) == 0 {
		return 0, 0
	}
	l := slices.Clone(d.latency)
	slices.Sort(l)
	at := func(q float64) float64 { return float64(l[int(q*float64(len(l)-1))].Microseconds()) / 1000 }
	return at(0.5), at(0.99)
}

// caughtUp returns when the subscriber had every one of want.
func (d *deliveries) caughtUp(want map[string][]uint64) time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	var last time.Time
	for ch, seqs := range want {
		for _, seq := range seqs {
			if at := d.first[ch][seq]; at.After(last) {
				last = at
			}
		}
	}
	return last
}

// firstAfter returns when the subscriber first handed a message over after t.
func (d *deliveries) firstAfter(t time.Time) time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	var first time.Time
	for _, m := range d.first {
		for _, at := range m {
			if at.After(t) && (first.IsZero() || at.Before(first)) {
				first = at
			}
		}
	}
	return first
}

// acks records the publisher's acknowledged seqs and when.
type acks struct {
	mu sync.Mutex
	at map[string]map[uint64]time.Time
}

func newAcks() *acks {
	a := &acks{at: map[string]map[uint64]time.Time{}}
	for _, ch := range channels {
		a.at[ch] = map[uint64]time.Time{}
	}
	return a
}

func (a *acks) add(ch string, seq uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.at[ch][seq] = time.Now()
}

func (a *acks) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, m := range a.at {
		n += len(m)
	}
	return n
}

func (a *acks) seqs(ch string) []uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]uint64, 0, len(a.at[ch]))
	for seq := range a.at[ch] {
		out = append(out, seq)
	}
	slices.Sort(out)
	return out
}

func (a *acks) before(t time.Time) map[string][]uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string][]uint64{}
	for ch, m := range a.at {
		for seq, at := range m {
			if at.Before(t) {
				out[ch] = append(out[ch], seq)
			}
		}
	}
	return out
}

// server is a quicpushd process.
type server struct {
	cmd                   *exec.Cmd
	addr, admin, data, ca string
}

func startServer(t *testing.T, data, addr, admin string) *server {
	t.Helper()
	cmd := exec.Command(bin.quicpushd, "--listen", addr, "--admin", admin, "--data", data, "--heartbeat", "1s", "--log-level", "warn")
	cmd.Stderr = testWriter{t, "quicpushd"}
	require.NoError(t, cmd.Start())
	s := &server{cmd: cmd, addr: addr, admin: admin, data: data, ca: filepath.Join(data, "certs", "ca.pem")}
	t.Cleanup(func() { s.kill(t) })
	waitFor(t, func() bool {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 20*time.Second, "quicpushd did not become ready")
	return s
}

func (s *server) kill(t *testing.T) {
	if s.cmd.ProcessState == nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
	}
}

func (s *server) stop(t *testing.T) {
	s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case err := <-done:
		require.NoError(t, err, "quicpushd did not exit cleanly on SIGTERM")
	case <-time.After(15 * time.Second):
		s.cmd.Process.Kill()
		<-done
		t.Fatal("quicpushd did not stop within 15 s of SIGTERM")
	}
}

// subscriber is a quicpush sub process printing into deliveries.
type subscriber struct {
	cmd   *exec.Cmd
	done  chan struct{} // stdout read to its end
	stats subStats
}

// subStats is the last line of quicpush sub --stats.
type subStats struct {
	Reconnects uint64 `json:"reconnects"`
	Used0RTT   uint64 `json:"used_0rtt"`
	Migrations uint64 `json:"migrations"`
	Fallbacks  uint64 `json:"migration_fallbacks"`
}

func startSub(t *testing.T, server, ca, state string, rec *deliveries, extra ...string) *subscriber {
	t.Helper()
	args := append([]string{"sub", "--server", server, "--ca", ca, "--state", state, "--log-level", "warn"}, extra...)
	cmd := exec.Command(bin.quicpush, append(args, channels...)...)
	cmd.Stderr = testWriter{t, "sub"}
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	s := &subscriber{cmd: cmd, done: make(chan struct{})}
	t.Cleanup(func() { s.kill(t) })
	run := rec.newRun()
	go func() {
		defer close(s.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var l struct {
				Channel string          `json:"channel"`
				Seq     uint64          `json:"seq"`
				Data    string          `json:"data"`
				Gap     json.RawMessage `json:"gap"`
				Stats   *subStats       `json:"stats"`
			}
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				t.Errorf("sub printed a line that is not JSON: %q", sc.Text())
				continue
			}
			switch {
			case l.Stats != nil:
				s.stats = *l.Stats
			case l.Gap != nil:
				rec.mu.Lock()
				rec.gapLines = append(rec.gapLines, sc.Text())
				rec.mu.Unlock()
			default:
				rec.add(run, l.Channel, l.Seq, l.Data, time.Now())
			}
		}
	}()
	return s
}

func (s *subscriber) kill(t *testing.T) {
	if s.cmd.ProcessState == nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
	}
}

// stop ends the subscriber with SIGTERM and returns its stats line.
func (s *subscriber) stop(t *testing.T) subStats {
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		t.Error("sub did not exit within 10 s of SIGTERM")
	}
	s.kill(t)
	return s.stats
}

func dialPublisher(t *testing.T, addr, ca string) *client.Client {
	pool, err := certs.CAPool(ca)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, addr, client.Config{
		TLSConfig: &tls.Config{RootCAs: pool}, Token: "teacher", ReconnectMax: time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func waitFor(t *testing.T, cond func() bool, within time.Duration, msg string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s (after %v)", msg, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func freeUDP(t *testing.T) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	defer pc.Close()
	return pc.LocalAddr().String()
}

func freeTCP(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

// testWriter sends a process's stderr to the test log, line by line.
type testWriter struct {
	t    *testing.T
	name string
}

func (w testWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		w.t.Logf("%s: %s", w.name, line)
	}
	return len(p), nil
}
