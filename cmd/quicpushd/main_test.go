package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/certs"
	"github.com/quicpush/quicpush/client"
)

// syncBuffer is a bytes.Buffer that a process may write while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// freeUDP and freeTCP return a loopback address nobody listens on now.
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

// waitReady polls /readyz until it answers 200, or fails the test once
// exited is closed or the deadline passes.
func waitReady(t *testing.T, admin string, exited <-chan struct{}, stderr *syncBuffer) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			t.Fatalf("quicpushd exited before it was ready:\n%s", stderr)
		default:
		}
		resp, err := http.Get("http://" + admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronization
	}
	t.Fatalf("quicpushd not ready after 30s:\n%s", stderr)
}

// daemon is a quicpushd process.
type daemon struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	exited chan struct{}
	err    error // Wait's, once exited is closed
}

func startDaemon(t *testing.T, bin string, args ...string) *daemon {
	t.Helper()
	d := &daemon{cmd: exec.Command(bin, args...), stderr: &syncBuffer{}, exited: make(chan struct{})}
	d.cmd.Stderr = d.stderr
	require.NoError(t, d.cmd.Start())
	go func() {
		d.err = d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		d.cmd.Process.Kill()
		<-d.exited
	})
	return d
}

func (d *daemon) signalAndWait(t *testing.T, sig os.Signal, within time.Duration) error {
	t.Helper()
	require.NoError(t, d.cmd.Process.Signal(sig))
	select {
	case <-d.exited:
		return d.err
	case <-time.After(within):
		t.Fatalf("quicpushd still running %v after %v:\n%s", within, sig, d.stderr)
		return nil
	}
}

// buildDaemon builds quicpushd for a test and returns the binary's path.
func buildDaemon(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "quicpushd")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "%s", out)
	return bin
}

// TestRestartKeepsSeqs runs the real binary, kills it with SIGKILL in the
// middle of a client's life, restarts it on the same data directory, and
// checks that seqs go on with no hole and no reuse, that the client of the
// first run recovers (through the persisted stateless reset key), and that
// SIGTERM ends it with status 0.
func TestRestartKeepsSeqs(t *testing.T) {
	bin := buildDaemon(t)
	dir := t.TempDir()
	listen, admin := freeUDP(t), freeTCP(t)
	args := []string{"--listen", listen, "--admin", admin, "--data", dir}

	d := startDaemon(t, bin, args...)
	waitReady(t, admin, d.exited, d.stderr)
	require.Contains(t, d.stderr.String(), "clients need --ca "+filepath.Join(dir, "certs", "ca.pem"))
	// /readyz may answer a moment before the "listening" line is written.
	require.Eventually(t, func() bool { return strings.Contains(d.stderr.String(), "addr="+listen) }, 5*time.Second, 10*time.Millisecond,
		"no listening line: %s", d.stderr.String())

	pool, err := certs.CAPool(filepath.Join(dir, "certs", "ca.pem"))
	require.NoError(t, err)
	c, err := client.Dial(t.Context(), listen, client.Config{TLSConfig: &tls.Config{RootCAs: pool}, ReconnectMax: 200 * time.Millisecond})
	require.NoError(t, err)
	defer c.Close()
	acked := map[uint64]string{}
	publish := func(run string) {
		t.Helper()
		for n := 1; n <= 5; n++ {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			data := fmt.Sprintf("%s %d", run, n)
			res, err := c.Session("default").Publish(ctx, "room/restart", []byte(data), client.PublishOptions{ID: fmt.Sprintf("%s-%d", run, n)})
			cancel()
			require.NoError(t, err, "publish %q; quicpushd:\n%s", data, d.stderr)
			_, reused := acked[res.Seq]
			require.False(t, reused, "seq %d acknowledged twice", res.Seq)
			require.Equal(t, uint64(len(acked)+1), res.Seq, "no hole")
			acked[res.Seq] = data
		}
	}
	publish("first")

	err = d.signalAndWait(t, syscall.SIGKILL, 10*time.Second)
	require.Error(t, err)
	d = startDaemon(t, bin, args...)
	waitReady(t, admin, d.exited, d.stderr)
	publish("second")

	msgs, gap, err := c.History(t.Context(), "room/restart", 1, 0)
	require.NoError(t, err)
	require.Nil(t, gap)
	require.Len(t, msgs, len(acked))
	for _, m := range msgs {
		require.Equal(t, acked[m.Seq], string(m.Data), "seq %d", m.Seq)
	}
	require.NoError(t, c.Close())

	require.NoError(t, d.signalAndWait(t, syscall.SIGTERM, 10*time.Second), "quicpushd:\n%s", d.stderr)
	require.Contains(t, d.stderr.String(), "msg=stopped")
}

// TestSIGTERMDrainsAndRestartLosesNothing keeps subscribers connected to
// the real binary through a SIGTERM while publishes are in flight: every
// client is told to go (GOAWAY SHUTTING_DOWN) and leaves, quicpushd
// finishes the publishes it took, saves the acknowledged cursors, closes
// the store and exits 0. Restarted on the same data directory, it gets the
// clients back, every acknowledged message reaches every subscriber exactly
// once and in order, and a user's acknowledged position is where a fresh
// client of that user starts.
func TestSIGTERMDrainsAndRestartLosesNothing(t *testing.T) {
	bin := buildDaemon(t)
	dir := t.TempDir()
	listen, admin := freeUDP(t), freeTCP(t)
	args := []string{"--listen", listen, "--admin", admin, "--data", dir}
	d := startDaemon(t, bin, args...)
	waitReady(t, admin, d.exited, d.stderr)
	pool, err := certs.CAPool(filepath.Join(dir, "certs", "ca.pem"))
	require.NoError(t, err)
	dial := func(user string, logs io.Writer) *client.Client {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		c, err := client.Dial(ctx, listen, client.Config{TLSConfig: &tls.Config{RootCAs: pool}, Token: user,
			ReconnectMin: 20 * time.Millisecond, ReconnectMax: 200 * time.Millisecond,
			Logger: slog.New(slog.NewTextHandler(logs, nil))})
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		return c
	}
	ctx := t.Context()

	// alice handles her channel's first messages and leaves: her
	// acknowledged cursor is all the server keeps of her.
	pub := dial("publisher", io.Discard)
	for n := 1; n <= 3; n++ {
		_, err := pub.Session("p").Publish(ctx, "user/alice", []byte("before"), client.PublishOptions{})
		require.NoError(t, err)
	}
	alice := dial("alice", io.Discard)
	handled := make(chan uint64, 10)
	_, err = alice.Session("inbox").Subscribe(ctx, "user/alice", client.SubscribeOptions{}, func(m client.Message) error {
		handled <- m.Seq
		return nil
	})
	require.NoError(t, err)
	for want := uint64(1); want <= 3; want++ {
		require.Equal(t, want, <-handled)
	}
	require.NoError(t, alice.Close()) // sends its last acks first

	type subscriber struct {
		c    *client.Client
		logs *syncBuffer
		mu   sync.Mutex
		got  []client.Message
	}
	subs := make([]*subscriber, 3)
	for i := range subs {
		s := &subscriber{logs: &syncBuffer{}}
		s.c = dial(fmt.Sprintf("student-%d", i), s.logs)
		_, err := s.c.Session("classroom").Subscribe(ctx, "room/drain", client.SubscribeOptions{Since: new(uint64)}, func(m client.Message) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.got = append(s.got, m)
			return nil
		})
		require.NoError(t, err)
		subs[i] = s
	}

	// Four publishers keep publishes in flight through the drain and the
	// restart; a publish cut off is retried with its id, so stored once.
	const publishers, each = 4, 50
	var (
		mu    sync.Mutex
		acked = map[uint64]string{}
		wg    sync.WaitGroup
	)
	ackedCount := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	for p := range publishers {
		wg.Go(func() {
			for n := 1; n <= each; n++ {
				data := fmt.Sprintf("p%d-%d", p, n)
				pctx, cancel := context.WithTimeout(ctx, 60*time.Second)
				res, err := pub.Session("p").Publish(pctx, "room/drain", []byte(data), client.PublishOptions{ID: data})
				cancel()
				if err != nil {
					t.Errorf("publish %s: %v", data, err)
					return
				}
				mu.Lock()
				if old, ok := acked[res.Seq]; ok && old != data {
					t.Errorf("seq %d acknowledged for %s and %s", res.Seq, old, data)
				}
				acked[res.Seq] = data
				mu.Unlock()
			}
		})
	}
	require.Eventually(t, func() bool { return ackedCount() >= 40 }, 30*time.Second, time.Millisecond)

	require.NoError(t, d.signalAndWait(t, syscall.SIGTERM, 15*time.Second), "quicpushd:\n%s", d.stderr)
	logs := d.stderr.String()
	require.Contains(t, logs, "msg=\"shutting down\"")
	require.NotContains(t, logs, "clients still connected were disconnected", "clients must leave on GOAWAY")
	require.Contains(t, logs, "msg=stopped")
	for i, s := range subs {
		require.Contains(t, s.logs.String(), `msg="server asked to reconnect" code=SHUTTING_DOWN`, "subscriber %d", i)
	}

	d = startDaemon(t, bin, args...)
	waitReady(t, admin, d.exited, d.stderr)
	wg.Wait()
	require.Len(t, acked, publishers*each, "quicpushd:\n%s", d.stderr)
	for seq := uint64(1); seq <= publishers*each; seq++ {
		require.Contains(t, acked, seq, "no hole")
	}
	for i, s := range subs {
		require.Eventually(t, func() bool {
			s.mu.Lock()
			defer s.mu.Unlock()
			return len(s.got) >= len(acked)
		}, 30*time.Second, 5*time.Millisecond, "subscriber %d", i)
		s.mu.Lock()
		for k, m := range s.got {
			require.Equal(t, uint64(k+1), m.Seq, "subscriber %d: exactly once, in order", i)
			require.Equal(t, acked[m.Seq], string(m.Data), "subscriber %d, seq %d", i, m.Seq)
		}
		require.Len(t, s.got, len(acked), "subscriber %d", i)
		s.mu.Unlock()
		require.GreaterOrEqual(t, s.c.Stats().Connects, uint64(2), "subscriber %d stayed through the restart", i)
	}

	fresh := dial("alice", io.Discard) // no local state: starts at the server's cursor
	handled = make(chan uint64, 10)
	_, err = fresh.Session("inbox").Subscribe(ctx, "user/alice", client.SubscribeOptions{}, func(m client.Message) error {
		handled <- m.Seq
		return nil
	})
	require.NoError(t, err)
	_, err = pub.Session("p").Publish(ctx, "user/alice", []byte("after"), client.PublishOptions{})
	require.NoError(t, err)
	select {
	case seq := <-handled:
		require.Equal(t, uint64(4), seq, "alice's acknowledged cursor was lost in the drain")
	case <-time.After(10 * time.Second):
		t.Fatal("alice got nothing")
	}

	require.NoError(t, d.signalAndWait(t, syscall.SIGTERM, 15*time.Second), "quicpushd:\n%s", d.stderr)
}

// inProcess is a run of quicpushd in the test process.
type inProcess struct {
	stderr *syncBuffer
	exited chan struct{}
	code   int // once exited is closed
}

// runDaemon runs quicpushd in-process until ctx ends.
func runDaemon(ctx context.Context, args ...string) *inProcess {
	p := &inProcess{stderr: &syncBuffer{}, exited: make(chan struct{})}
	go func() {
		p.code = run(ctx, args, &syncBuffer{}, p.stderr)
		close(p.exited)
	}()
	return p
}

func (p *inProcess) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.exited:
		return p.code
	case <-time.After(30 * time.Second):
		t.Fatalf("quicpushd did not exit:\n%s", p.stderr)
		return 0
	}
}

func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "typo.yaml")
	require.NoError(t, os.WriteFile(config, []byte("lisen: :4433\n"), 0o600))
	short := filepath.Join(dir, "short")
	require.NoError(t, os.WriteFile(short, []byte("hunter2\n"), 0o600))
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--bogus"}, "unknown flag --bogus"},
		{[]string{"--cert", "c.pem"}, "--cert and --key must be used together"},
		{[]string{"--log-level", "loud"}, "--log-level must be one of"},
		{[]string{"--config", config}, `unknown key "lisen"`},
		{[]string{"--config", filepath.Join(dir, "missing.yaml")}, "missing.yaml"},
		{[]string{"--jwt-secret-file", short, "--jwt-public-key", short}, "--jwt-secret-file and --jwt-public-key can't be used together"},
		{[]string{"--jwt-secret-file", filepath.Join(dir, "missing")}, "--jwt-secret-file: open " + filepath.Join(dir, "missing")},
		{[]string{"--jwt-secret-file", short}, "an HS256 secret of 7 bytes is too short: use at least 32"},
		{[]string{"--jwt-public-key", short}, "--jwt-public-key: " + short + ": no PEM block"},
		{[]string{"--api-key-file", short}, "--api-key-file: " + short + ": an API key of 7 bytes is too short"},
	} {
		p := runDaemon(t.Context(), tc.args...)
		require.Equal(t, 2, p.wait(t), tc.args)
		require.Contains(t, p.stderr.String(), tc.want)
		require.Contains(t, p.stderr.String(), "see quicpushd --help")
		require.NotContains(t, p.stderr.String(), "hunter2", "key files' content is never shown")
	}
}

func TestStartFailures(t *testing.T) {
	busy, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	defer busy.Close()
	file := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--listen", busy.LocalAddr().String(), "--data", t.TempDir()}, "cannot listen on UDP " + busy.LocalAddr().String()},
		{[]string{"--listen", freeUDP(t), "--data", file}, "cannot use data directory " + file},
	} {
		p := runDaemon(t.Context(), append(tc.args, "--admin", freeTCP(t))...)
		require.Equal(t, 1, p.wait(t), p.stderr.String())
		require.Contains(t, p.stderr.String(), tc.want)
	}
}

// TestConfigFileAndEnvironment starts quicpushd from a config file (with
// its own certificate) whose admin address the environment overrides,
// reloads the certificate on SIGHUP, then stops it by its context.
func TestConfigFileAndEnvironment(t *testing.T) {
	dir := t.TempDir()
	cert, err := certs.EnsureDev(t.TempDir(), nil)
	require.NoError(t, err)
	listen, admin := freeUDP(t), freeTCP(t)
	config := filepath.Join(dir, "quicpushd.json")
	require.NoError(t, os.WriteFile(config, []byte(fmt.Sprintf(`{"listen": %q, "admin": "127.0.0.1:1", "data": %q, "cert": %q, "key": %q, "log-format": "json"}`,
		listen, dir, cert.Cert, cert.Key)), 0o600))
	t.Setenv("QUICPUSH_ADMIN", admin)
	t.Setenv("QUICPUSH_CONFIG", config)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	p := runDaemon(ctx)
	waitReady(t, admin, p.exited, p.stderr)
	want := fmt.Sprintf(`"msg":"quicpushd listening","addr":%q`, listen)
	require.Eventually(t, func() bool { return strings.Contains(p.stderr.String(), want) }, 5*time.Second, 10*time.Millisecond,
		"no listening line: %s", p.stderr.String())
	require.NotContains(t, p.stderr.String(), "dev certificate")
	require.Contains(t, p.stderr.String(), `"level":"WARN","msg":"DEV MODE: no --jwt-secret-file/--jwt-public-key: any client is accepted`)
	require.Contains(t, p.stderr.String(), `"msg":"HTTP API disabled: no --api-key-file"`)
	resp, err := http.Get("http://" + admin + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	resp, err = http.Post("http://"+admin+"/v1/publish", "application/json", strings.NewReader(`{"channel":"room/a","data":"x"}`))
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	require.JSONEq(t, `{"error":{"code":"not_found","message":"the HTTP API is off: start quicpushd with --api-key-file FILE"}}`, string(body))

	require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGHUP)) // quicpushd handles it while it runs
	require.Eventually(t, func() bool {
		return strings.Contains(p.stderr.String(), `"msg":"SIGHUP: certificate reloaded"`)
	}, 10*time.Second, 5*time.Millisecond, "%s", p.stderr)

	cancel()
	require.Equal(t, 0, p.wait(t), p.stderr.String())
	require.Contains(t, p.stderr.String(), `"msg":"stopped"`)
}
