package webtest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/client"
	"github.com/quicpush/quicpush/server"
)

// A page receives 1000 reliable messages over 3 channels on 2 sessions:
// none missing, none twice, each channel in seq order, with the right data.
func TestBrowserReceivesEveryMessageOnce(t *testing.T) {
	e := newEnv(t)
	page := e.harness(t, browser(t))
	eval[map[string]any](t, page, `h.start({user: "alice", subs: [
		{session: "classroom", channel: "room/a"},
		{session: "classroom", channel: "room/b"},
		{session: "notify", channel: "room/c"}]})`)

	counts := map[string]int{"room/a": 0, "room/b": 0, "room/c": 0}
	channels := []string{"room/a", "room/b", "room/c"}
	for i := range 1000 {
		ch := channels[(i*7/3)%3] // uneven interleaving
		counts[ch]++
		e.publish(t, ch, fmt.Sprintf("%s #%d", ch, counts[ch]))
	}
	waitFor(t, page, `(h.got["room/a"]?.length ?? 0) + (h.got["room/b"]?.length ?? 0) + (h.got["room/c"]?.length ?? 0) >= 1000`, 60*time.Second)
	for _, ch := range channels {
		rs := got(t, page, ch)
		requireExactly(t, seqsOf(rs), counts[ch], ch)
		for _, r := range rs {
			require.Equal(t, fmt.Sprintf("%s #%d", ch, r.Seq), r.Text)
		}
	}
	require.Empty(t, eval[[]string](t, page, "h.problems"))
	t.Logf("received %v; stats %v", counts, eval[map[string]any](t, page, "h.client.getStats()"))
}

// A hole made on the server side (the store reports the messages, the
// server never pushes them live) is found by the page and repaired from
// the store: every message once, in order, the missing ones by repair.
func TestBrowserRepairsServerSideHoles(t *testing.T) {
	e := newEnv(t)
	e.store.skipSeqs("room/h", 5, 17, 18)
	page := e.harness(t, browser(t))
	eval[map[string]any](t, page, `h.start({user: "bob", subs: [{session: "classroom", channel: "room/h"}]})`)
	const n = 30
	for i := 1; i <= n; i++ {
		e.publish(t, "room/h", fmt.Sprintf("room/h #%d", i))
	}
	waitFor(t, page, `(h.got["room/h"]?.length ?? 0) >= 30`, 30*time.Second)
	rs := got(t, page, "room/h")
	requireExactly(t, seqsOf(rs), n, "room/h")
	for _, r := range rs {
		require.Equal(t, fmt.Sprintf("room/h #%d", r.Seq), r.Text)
		if r.Seq == 5 || r.Seq == 17 || r.Seq == 18 {
			require.True(t, r.Repaired, "seq %d was never pushed live: it must come by repair", r.Seq)
		}
	}
	stats := eval[map[string]float64](t, page, "(({state, ...s}) => s)(h.client.getStats())")
	require.GreaterOrEqual(t, stats["repaired"], 3.0)
	require.Empty(t, eval[[]string](t, page, "h.problems"))
	t.Logf("stats %v", stats)
}

// A page reloaded while messages flow resumes from the positions it
// persisted (localStorage): what the handlers recorded before and after
// the reload is every message exactly once, in order.
func TestBrowserReloadResumesWithoutDuplicates(t *testing.T) {
	e := newEnv(t)
	page := e.harness(t, browser(t))
	start := `h.start({user: "carol", persist: true, subs: [{session: "classroom", channel: "room/r"}]})`
	eval[map[string]any](t, page, start)

	const n = 300
	published := make(chan error, 1)
	go func() {
		for i := 1; i <= n; i++ {
			if _, err := e.srv.Publish(t.Context(), "teacher", []server.PublishRequest{{Channel: "room/r", Data: fmt.Appendf(nil, "room/r #%d", i)}}); err != nil {
				published <- err
				return
			}
		}
		published <- nil
	}()
	waitFor(t, page, `h.log("room/r").length >= 100`, 30*time.Second)
	require.NoError(t, chromedp.Do(page, chromedp.Reload()))
	waitFor(t, page, "window.harnessReady === true", 10*time.Second)
	before := eval[[]uint64](t, page, `h.log("room/r")`)
	require.Less(t, len(before), n, "the reload must come while messages still flow")
	eval[map[string]any](t, page, start)
	require.NoError(t, <-published)

	waitFor(t, page, `h.log("room/r").length >= 300`, 30*time.Second)
	requireExactly(t, eval[[]uint64](t, page, `h.log("room/r")`), n, "room/r across the reload")
	after := got(t, page, "room/r")
	require.NotEmpty(t, after)
	require.Greater(t, after[0].Seq, uint64(1), "the reloaded page resumed, it did not start over")
	for _, r := range after {
		require.Equal(t, fmt.Sprintf("room/r #%d", r.Seq), r.Text)
	}
	require.Empty(t, eval[[]string](t, page, "h.problems"))
	t.Logf("handled %d before the reload, %d after (from seq %d)", len(before), len(after), after[0].Seq)
}

// A Go subscriber (native QUIC, client package) and a browser subscriber
// (WebTransport) on the same channel see identical sequences, published by
// four concurrent Go publishers, with a hole both must repair.
func TestGoAndBrowserSubscribersSeeTheSameSequence(t *testing.T) {
	e := newEnv(t)
	e.store.skipSeqs("room/d", 50, 51, 300)
	page := e.harness(t, browser(t))
	eval[map[string]any](t, page, `h.start({user: "dave", subs: [{session: "classroom", channel: "room/d"}]})`)

	var mu sync.Mutex
	var native []received
	sub := e.dial(t, "erin")
	zero := uint64(0)
	_, err := sub.Session("classroom").Subscribe(t.Context(), "room/d", client.SubscribeOptions{Since: &zero}, func(m client.Message) error {
		mu.Lock()
		defer mu.Unlock()
		native = append(native, received{Seq: m.Seq, Text: string(m.Data), Repaired: m.Repaired})
		return nil
	})
	require.NoError(t, err)

	const publishers, each = 4, 100
	pub := e.dial(t, "teacher").Session("classroom")
	var wg sync.WaitGroup
	errs := make(chan error, publishers)
	for p := range publishers {
		wg.Go(func() {
			for i := range each {
				if _, err := pub.Publish(t.Context(), "room/d", fmt.Appendf(nil, "publisher %d message %d", p, i), client.PublishOptions{}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	const n = publishers * each
	waitFor(t, page, `(h.got["room/d"]?.length ?? 0) >= 400`, 30*time.Second)
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		done := len(native) >= n
		mu.Unlock()
		if done {
			break
		}
		require.False(t, time.Now().After(deadline), "the Go subscriber did not get %d messages", n)
		time.Sleep(20 * time.Millisecond)
	}
	browser := got(t, page, "room/d")
	mu.Lock()
	defer mu.Unlock()
	requireExactly(t, seqsOf(native), n, "Go subscriber")
	requireExactly(t, seqsOf(browser), n, "browser subscriber")
	for i := range browser {
		require.Equal(t, native[i].Text, browser[i].Text, "seq %d", i+1)
	}
	require.Empty(t, eval[[]string](t, page, "h.problems"))
}

// Droppable messages reach the page as datagrams, beside reliable ones on
// the session stream; every numbered droppable is either handed over or
// counted as missing, and the reliable ones are all there, in order.
func TestBrowserTakesDroppablesAsDatagrams(t *testing.T) {
	e := newEnv(t)
	page := e.harness(t, browser(t))
	features := eval[string](t, page, `h.start({user: "frank", subs: [{session: "classroom", channel: "room/x"}]}).then(() => String(h.client.cur.features))`)
	require.Equal(t, "7", features, "the server enables every feature the page announced")
	pub := e.dial(t, "teacher").Session("classroom")
	const n = 40
	for i := 1; i <= n; i++ {
		_, err := pub.Publish(t.Context(), "room/x", fmt.Appendf(nil, "cheer %d", i), client.PublishOptions{Droppable: true})
		require.NoError(t, err)
		if i%4 == 0 {
			_, err := pub.Publish(t.Context(), "room/x", fmt.Appendf(nil, "room/x #%d", i/4), client.PublishOptions{})
			require.NoError(t, err)
		}
	}
	waitFor(t, page, `(({droppable, droppableMissing}) => droppable + droppableMissing >= 40)(h.client.getStats()) && h.got["room/x"]?.filter(([seq]) => seq > 0).length >= 10`, 20*time.Second)
	stats := eval[map[string]float64](t, page, "(({state, ...s}) => s)(h.client.getStats())")
	require.Equal(t, float64(n), stats["droppable"]+stats["droppableMissing"], "every droppable handed over or counted missing: %v", stats)
	require.Greater(t, e.srv.Stats().DatagramsSent, uint64(0), "droppables went as datagrams")
	var reliable []uint64
	for _, r := range got(t, page, "room/x") {
		if r.Seq > 0 {
			reliable = append(reliable, r.Seq)
		}
	}
	requireExactly(t, reliable, n/4, "room/x reliable")
	require.Empty(t, eval[[]string](t, page, "h.problems"))
	t.Logf("stats %v; server %+v", stats, e.srv.Stats())
}

// A server that shuts down sends GOAWAY; the page says goodbye, reconnects
// with backoff to the server started again on the same port (same store),
// resubscribes from its positions and pulls what it missed: every message
// once, in order, over two connections.
func TestBrowserResumesAfterServerRestart(t *testing.T) {
	e := newEnv(t)
	page := e.harness(t, browser(t))
	eval[map[string]any](t, page, `h.start({user: "gina", subs: [{session: "classroom", channel: "room/s"}, {session: "notify", channel: "user/gina"}]})`)
	eval[bool](t, page, `(() => { window.states = []; h.client.addEventListener("state", (e) => states.push(e.detail.state + " " + e.detail.reason)); return true })()`)
	for i := 1; i <= 50; i++ {
		e.publish(t, "room/s", fmt.Sprintf("room/s #%d", i))
	}
	e.publish(t, "user/gina", "user/gina #1")
	waitFor(t, page, `(h.got["room/s"]?.length ?? 0) >= 50`, 20*time.Second)

	e.restart(t)
	for i := 51; i <= 100; i++ {
		e.publish(t, "room/s", fmt.Sprintf("room/s #%d", i))
	}
	e.publish(t, "user/gina", "user/gina #2")
	waitFor(t, page, `(h.got["room/s"]?.length ?? 0) >= 100 && (h.got["user/gina"]?.length ?? 0) >= 2`, 30*time.Second)
	rs := got(t, page, "room/s")
	requireExactly(t, seqsOf(rs), 100, "room/s across the restart")
	for _, r := range rs {
		require.Equal(t, fmt.Sprintf("room/s #%d", r.Seq), r.Text)
	}
	requireExactly(t, seqsOf(got(t, page, "user/gina")), 2, "user/gina across the restart")
	stats := eval[map[string]any](t, page, "h.client.getStats()")
	require.Equal(t, 2.0, stats["connects"])
	states := eval[[]string](t, page, "states")
	require.Len(t, states, 2, "%v", states)
	require.Equal(t, "connecting goaway SHUTTING_DOWN", states[0], "the page was told to go")
	require.Regexp(t, "^connected ", states[1])
	require.Empty(t, eval[[]string](t, page, "h.problems"))
}

// Tokens: one the server refuses fails the page's connect; one that expires is
// refreshed on the open connection (FeatureTokenRefresh), which outlives
// several expiries, and several idle timeouts kept off by the heartbeat,
// without reconnecting.
func TestBrowserTokens(t *testing.T) {
	var refreshes atomic.Int32
	e := newEnv(t, func(cfg *server.Config) {
		cfg.Heartbeat = time.Second // pings (from the SDK's worker ticker) keep the connection: idle timeout 3 s
		cfg.Authenticate = func(_ context.Context, ev server.HelloEvent) (server.HelloReply, error) {
			user, _, ok := strings.Cut(ev.Token, ":")
			if !ok || user == "mallory" {
				return server.HelloReply{}, errors.New("bad token")
			}
			if ev.Refresh {
				refreshes.Add(1)
			}
			return server.HelloReply{User: user, ExpiresAt: time.Now().Add(1500 * time.Millisecond)}, nil
		}
	})
	b := browser(t)
	refused := e.harness(t, b)
	// Told by an Error frame on the control stream: Chromium loses the
	// session's close code (quic-go/webtransport-go#242).
	outcome := eval[string](t, refused, `h.start({user: "mallory", tokenPrefix: "mallory:", subs: []}).then(() => "connected", (e) => "refused: " + e)`)
	require.Regexp(t, "^refused: .*UNAUTHORIZED.*bad token", outcome)

	page := e.harness(t, b)
	eval[map[string]any](t, page, `h.start({user: "hana", tokenPrefix: "hana:", subs: [{session: "classroom", channel: "room/t"}]})`)
	deadline := time.Now().Add(20 * time.Second)
	for i := 1; refreshes.Load() < 3; i++ {
		require.False(t, time.Now().After(deadline), "the page did not refresh its token")
		e.publish(t, "room/t", fmt.Sprintf("room/t #%d", i))
		time.Sleep(100 * time.Millisecond)
	}
	n := len(got(t, page, "room/t"))
	e.publish(t, "room/t", fmt.Sprintf("room/t #%d", n+1))
	waitFor(t, page, fmt.Sprintf(`(h.got["room/t"]?.length ?? 0) >= %d`, n+1), 10*time.Second)
	stats := eval[map[string]any](t, page, "h.client.getStats()")
	require.Equal(t, 1.0, stats["connects"], "refreshed on the open connection, never reconnected")
	require.Equal(t, "connected", stats["state"])
	require.Empty(t, eval[[]string](t, page, "h.problems"))
}
