package webtest

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/certs"
	"github.com/quicpush/quicpush/client"
	"github.com/quicpush/quicpush/client/web"
	"github.com/quicpush/quicpush/server"
	"github.com/quicpush/quicpush/store"
)

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// holeStore is the real Badger store, except that Watch never reports the
// messages chosen by skip: the server stores them but never pushes them
// live, so subscribers see a hole and must repair it from the store.
type holeStore struct {
	*store.DB
	mu   sync.Mutex
	skip map[string]map[uint64]bool
}

func (h *holeStore) skipSeqs(channel string, seqs ...uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.skip[channel] == nil {
		h.skip[channel] = map[uint64]bool{}
	}
	for _, s := range seqs {
		h.skip[channel][s] = true
	}
}

func (h *holeStore) Watch(fn func([]store.Message)) (stop func()) {
	return h.DB.Watch(func(msgs []store.Message) {
		h.mu.Lock()
		kept := make([]store.Message, 0, len(msgs))
		for _, m := range msgs {
			if !h.skip[m.Channel][m.Seq] {
				kept = append(kept, m)
			}
		}
		h.mu.Unlock()
		if len(kept) > 0 {
			fn(kept)
		}
	})
}

var _ server.Store = (*holeStore)(nil)

// env is a quicpush server with WebTransport on a loopback UDP port, a
// Badger store in a temporary directory, and an HTTP server on loopback
// serving the SDK, the demo pages and the test harness.
type env struct {
	srv     *server.Server
	cfg     server.Config
	pc      net.PacketConn
	store   *holeStore
	addr    string // the server's UDP address
	pageURL string // http://127.0.0.1:PORT
	ca      string // the dev CA for native clients
}

// newEnv starts the servers; opts adjust the quicpush server's config.
func newEnv(t *testing.T, opts ...func(*server.Config)) *env {
	t.Helper()
	dir := t.TempDir()
	db, err := store.Open(dir+"/store", store.Options{Logger: quietLog})
	require.NoError(t, err)
	hs := &holeStore{DB: db, skip: map[string]map[uint64]bool{}}

	dev, err := certs.EnsureDev(dir, nil)
	require.NoError(t, err)
	native, err := certs.Load(dev.Cert, dev.Key)
	require.NoError(t, err)
	wc, err := certs.NewWebTransportCerts([]string{"127.0.0.1"})
	require.NoError(t, err)

	// The page's origin must be known to the server, so listen for HTTP first.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	e := &env{store: hs, pageURL: "http://" + ln.Addr().String(), ca: dev.CA}
	e.cfg = server.Config{
		Store:        hs,
		TLSConfig:    &tls.Config{GetCertificate: native.GetCertificate},
		Logger:       quietLog,
		WebTransport: &server.WebTransportConfig{Origins: []string{e.pageURL}, GetCertificate: wc.GetCertificate},
	}
	for _, o := range opts {
		o(&e.cfg)
	}
	e.start(t, "127.0.0.1:0")

	wtURL := fmt.Sprintf("https://%s%s", e.addr, server.WebTransportPath)
	pages := web.Handler(func() web.PageConfig {
		hashes, err := wc.Hashes()
		if err != nil {
			t.Errorf("certificate hashes: %v", err)
		}
		cfg := web.PageConfig{URL: wtURL}
		for _, h := range hashes {
			cfg.CertHashes = append(cfg.CertHashes, base64.StdEncoding.EncodeToString(h[:]))
		}
		return cfg
	})
	mux := http.NewServeMux()
	mux.Handle("/sdk/", pages)
	mux.Handle("/demo/", pages)
	mux.Handle("/test/", http.StripPrefix("/test/", http.FileServer(http.Dir("testdata"))))
	hsrv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: mux}}
	hsrv.Start()
	t.Cleanup(func() {
		hsrv.Close()
		e.srv.Close()
		e.pc.Close()
		db.Close()
	})
	return e
}

// start runs a server on the UDP address addr.
func (e *env) start(t *testing.T, addr string) {
	t.Helper()
	cfg := e.cfg
	cfg.Registerer = prometheus.NewRegistry()
	srv, err := server.New(cfg)
	require.NoError(t, err)
	pc, err := net.ListenPacket("udp", addr)
	require.NoError(t, err)
	a, err := srv.Listen(pc)
	require.NoError(t, err)
	e.srv, e.pc, e.addr = srv, pc, a.String()
}

// restart shuts the server down the graceful way (GOAWAY to every client,
// then close) and starts a new one on the same port with the same store.
func (e *env) restart(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	require.NoError(t, e.srv.Shutdown(ctx))
	e.pc.Close()
	e.start(t, e.addr)
}

// publish stores data for each of seqs... as the user "teacher", one call
// per message so that each is its own commit and live push.
func (e *env) publish(t *testing.T, channel string, data ...string) {
	t.Helper()
	for _, d := range data {
		_, err := e.srv.Publish(context.Background(), "teacher", []server.PublishRequest{{Channel: channel, Data: []byte(d)}})
		require.NoError(t, err)
	}
}

// dial connects a native (Go SDK, QUIC) client.
func (e *env) dial(t *testing.T, user string) *client.Client {
	t.Helper()
	pool, err := certs.CAPool(e.ca)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, e.addr, client.Config{Token: user, TLSConfig: &tls.Config{RootCAs: pool}, Logger: quietLog})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// browser starts headless Chromium with a fresh profile and the flags that
// keep it on loopback (/work/shared/DESIGN.md, "Browser tests here"). It
// fails the test when Chromium is missing, unless -short.
func browser(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if testing.Short() {
			t.Skip("chromium not installed (-short)")
		}
		t.Fatalf("chromium not found (apt-get install -y chromium): %v", err)
	}
	// Chromium now and then exits while starting on a loaded machine (a
	// crash report and no DevTools pipe): start it again, a few times.
	var startErr error
	for attempt := 1; attempt <= 3; attempt++ {
		ctx, stop := startChromium(t, path)
		if startErr = chromedp.Do(ctx, chromedp.Navigate("about:blank")); startErr == nil {
			t.Cleanup(stop)
			return ctx
		}
		stop()
		t.Logf("chromium did not start (attempt %d): %v", attempt, startErr)
	}
	t.Fatalf("chromium did not start: %v", startErr)
	return nil
}

func startChromium(t *testing.T, path string) (context.Context, func()) {
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
		chromedp.Flag("headless", "new"),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	return ctx, func() {
		cancel()
		cancelAlloc()
	}
}

// tab opens url in a new tab of the browser and logs what its pages print
// to the console and what they throw.
func tab(t *testing.T, b context.Context, url string) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b)
	t.Cleanup(cancel)
	require.NoError(t, chromedp.Do(ctx, chromedp.EmulateViewport(1100, 760)))
	require.NoError(t, chromedp.Listen(ctx, func(ev any) {
		switch e := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			var args []string
			for _, a := range e.Args {
				args = append(args, string(a.Value)+a.Description)
			}
			t.Logf("page console.%s: %v", e.Type, args)
		case *runtime.EventExceptionThrown:
			d := e.ExceptionDetails
			msg := d.Text
			if d.Exception != nil {
				msg += " " + d.Exception.Description
			}
			t.Logf("page exception at %s:%d: %s", d.URL, d.LineNumber+1, msg)
		}
	}))
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(url)))
	return ctx
}

// harness opens the test harness page and waits until it is ready.
func (e *env) harness(t *testing.T, b context.Context) context.Context {
	t.Helper()
	ctx := tab(t, b, e.pageURL+"/test/harness.html")
	waitFor(t, ctx, "window.harnessReady === true", 10*time.Second)
	return ctx
}

// eval runs expr in the page, awaiting it if it is a promise, and decodes
// its value into T.
func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	require.NoError(t, err, "evaluate %s", expr)
	return v
}

// waitFor polls expr in the page until it is true, failing after timeout.
func waitFor(t *testing.T, ctx context.Context, expr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !eval[bool](t, ctx, "!!("+expr+")") {
		if time.Now().After(deadline) {
			problems := eval[[]string](t, ctx, "window.h ? window.h.problems : []")
			t.Fatalf("timed out after %v waiting for %s (page problems: %v)", timeout, expr, problems)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// received is one message as a handler got it.
type received struct {
	Seq      uint64
	Text     string
	Repaired bool
}

// got reads what the harness handlers got on channel, in handler order.
func got(t *testing.T, ctx context.Context, channel string) []received {
	t.Helper()
	raw := eval[[][3]any](t, ctx, fmt.Sprintf("window.h.got[%q] ?? []", channel))
	out := make([]received, len(raw))
	for i, r := range raw {
		out[i] = received{Seq: uint64(r[0].(float64)), Text: r[1].(string), Repaired: r[2].(bool)}
	}
	return out
}

// requireExactly checks seqs are exactly 1..n: none missing, none twice, in order.
func requireExactly(t *testing.T, seqs []uint64, n int, what string) {
	t.Helper()
	want := make([]uint64, n)
	for i := range want {
		want[i] = uint64(i + 1)
	}
	require.Equal(t, want, seqs, "%s: every seq 1..%d once, in order", what, n)
}

func seqsOf(rs []received) []uint64 {
	out := make([]uint64, len(rs))
	for i, r := range rs {
		out[i] = r.Seq
	}
	return out
}
