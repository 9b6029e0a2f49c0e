package server_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/client"
	"github.com/quicpush/quicpush/internal/netem"
	"github.com/quicpush/quicpush/server"
	"github.com/quicpush/quicpush/stream"
)

// observer follows a channel's presence as a watcher sees it.
type observer struct {
	mu      sync.Mutex
	updates []client.PresenceUpdate
}

func (o *observer) handle(u client.PresenceUpdate) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.updates = append(o.updates, u)
}

func (o *observer) online() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.updates[len(o.updates)-1].Online
}

func (o *observer) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.updates)
}

func (o *observer) left() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var names []string
	for _, u := range o.updates {
		names = append(names, u.Left...)
	}
	return names
}

func watch(t *testing.T, ts *testServer, user, channel string) *observer {
	t.Helper()
	o := &observer{}
	c := dial(t, ts, client.Config{Token: user})
	_, err := c.Session("watch").WatchPresence(context.Background(), channel, o.handle)
	require.NoError(t, err)
	return o
}

// members pages through the channel's online users.
func members(t *testing.T, s *client.Session, channel string, pageSize int) []string {
	t.Helper()
	var all []string
	after := ""
	for range 1000 {
		page, err := s.PresenceMembers(context.Background(), channel, after, pageSize)
		require.NoError(t, err)
		require.LessOrEqual(t, len(page.Users), pageSize)
		all = append(all, page.Users...)
		if page.Next == "" {
			return all
		}
		after = page.Next
	}
	t.Fatal("member pages never ended")
	return nil
}

// 200 clients join a room, half of them leave and join again five times,
// 50 close (goodbye) and 10 lose their network for good. The watchers'
// online count converges to the truth, the member pages list exactly the
// users still there, and the number of presence frames each watcher got is
// bounded by the merge interval, not by the churn.
func TestPresence200Clients(t *testing.T) {
	const (
		interval = 200 * time.Millisecond
		room     = "room/big"
	)
	ts := runServer(t, server.Config{Heartbeat: 2 * time.Second, IdleTimeout: 4 * time.Second,
		Presence: server.PresenceConfig{Interval: interval, Grace: 500 * time.Millisecond}})
	relay, err := netem.Start(context.Background(), netem.Config{Upstream: ts.Addr, Logger: quietLog})
	require.NoError(t, err)
	defer relay.Close()
	behind := &testServer{Server: ts.Server, Addr: relay.Addr().String(), CA: ts.CA}

	started := time.Now()
	observers := []*observer{watch(t, ts, "teacher", room), watch(t, ts, "assistant", room)}

	const n = 200
	type member struct {
		c   *client.Client
		sub *client.Subscription
	}
	ms := make([]member, n)
	ctx := context.Background()
	var wg sync.WaitGroup
	each := func(from, to int, f func(i int)) {
		sem := make(chan struct{}, 16)
		for i := from; i < to; i++ {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				f(i)
			}()
		}
		wg.Wait()
	}
	user := func(i int) string { return fmt.Sprintf("u%03d", i) }
	subscribe := func(i int) {
		sub, err := ms[i].c.Session("class").Subscribe(ctx, room, client.SubscribeOptions{}, func(client.Message) error { return nil })
		if err != nil {
			t.Error(err)
			return
		}
		ms[i].sub = sub
	}
	// Clients 190..199 sit behind the relay.
	for i := range ms {
		at := ts
		if i >= n-10 {
			at = behind
		}
		ms[i].c = dial(t, at, client.Config{Token: user(i)})
	}
	each(0, n, subscribe)
	require.Eventually(t, func() bool { return observers[0].online() == n && observers[1].online() == n },
		10*time.Second, 10*time.Millisecond, "online: %d", observers[0].online())

	for range 5 { // churn: 100 leave and come back
		each(0, 100, func(i int) { ms[i].sub.Close() })
		each(0, 100, subscribe)
	}
	each(100, 150, func(i int) { ms[i].c.Close() }) // goodbye
	relay.Blackout(time.Hour)                       // 190..199 vanish without one

	var truth []string
	for i := range n {
		if i < 100 || i >= 150 && i < n-10 {
			truth = append(truth, user(i))
		}
	}
	for _, o := range observers {
		require.Eventually(t, func() bool { return o.online() == len(truth) }, 20*time.Second, 10*time.Millisecond,
			"online: %d, want %d", o.online(), len(truth))
	}
	lost := observers[0].left()
	for i := n - 10; i < n; i++ {
		require.Contains(t, lost, user(i))
	}
	page := dial(t, ts, client.Config{Token: "pager"}).Session("pages")
	require.Equal(t, truth, members(t, page, room, 37))
	_, err = page.PresenceMembers(ctx, room, "", 1001)
	require.ErrorIs(t, err, &stream.Error{Code: stream.InvalidRange})

	elapsed := time.Since(started)
	changes := metricValue(t, ts.Metrics, "quicpush_presence_changes_total", "kind", "join") +
		metricValue(t, ts.Metrics, "quicpush_presence_changes_total", "kind", "goodbye") +
		metricValue(t, ts.Metrics, "quicpush_presence_changes_total", "kind", "lost")
	require.GreaterOrEqual(t, changes, float64(n+2*5*100+50+10))
	require.GreaterOrEqual(t, metricValue(t, ts.Metrics, "quicpush_presence_changes_total", "kind", "lost"), 10.0)
	bound := int(elapsed/interval) + 2 // + the watch's answer and the first change after a quiet spell
	for i, o := range observers {
		require.LessOrEqual(t, o.count(), bound, "observer %d: %d frames in %v for %v changes", i, o.count(), elapsed, changes)
		t.Logf("observer %d: %d presence frames in %v (bound %d) for %v joins and leaves", i, o.count(), elapsed.Round(time.Millisecond), bound, changes)
	}
	require.Equal(t, float64(2), metricValue(t, ts.Metrics, "quicpush_presence_watches"))
}

// Moving the connection (two migrations, then the reconnect the server
// asks for) is not a leave: the reconnect comes back within the grace
// period. A connection lost for good leaves after the grace period.
func TestPresenceGrace(t *testing.T) {
	ts := runServer(t, server.Config{Heartbeat: time.Second,
		Presence: server.PresenceConfig{Interval: 50 * time.Millisecond, Grace: 2 * time.Second}})
	o := watch(t, ts, "teacher", "room/g")
	ctx := context.Background()
	mover := dial(t, ts, client.Config{Token: "mover"})
	_, err := mover.Session("s").Subscribe(ctx, "room/g", client.SubscribeOptions{}, func(client.Message) error { return nil })
	require.NoError(t, err)
	require.Eventually(t, func() bool { return o.online() == 1 }, 5*time.Second, 10*time.Millisecond)
	require.NoError(t, mover.Migrate(ctx, "127.0.0.2:0"))
	require.NoError(t, mover.Migrate(ctx, "127.0.0.3:0"))
	require.Eventually(t, func() bool { return mover.Stats().Connects == 2 }, 10*time.Second, 10*time.Millisecond,
		"the server did not ask for a reconnect")
	// Once the old connection is gone, its pending leave has been cancelled.
	require.Eventually(t, func() bool { return ts.ConnCount() == 2 }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, 1, o.online())
	require.Empty(t, o.left())
	require.Zero(t, metricValue(t, ts.Metrics, "quicpush_presence_changes_total", "kind", "goodbye"))
	require.Zero(t, metricValue(t, ts.Metrics, "quicpush_presence_changes_total", "kind", "lost"))

	relay, err := netem.Start(ctx, netem.Config{Upstream: ts.Addr, Logger: quietLog})
	require.NoError(t, err)
	defer relay.Close()
	gone := dial(t, &testServer{Server: ts.Server, Addr: relay.Addr().String(), CA: ts.CA}, client.Config{Token: "gone"})
	_, err = gone.Session("s").Subscribe(ctx, "room/g", client.SubscribeOptions{}, func(client.Message) error { return nil })
	require.NoError(t, err)
	require.Eventually(t, func() bool { return o.online() == 2 }, 5*time.Second, 10*time.Millisecond)
	relay.Blackout(time.Hour)
	vanished := time.Now()
	require.Eventually(t, func() bool { return slices.Contains(o.left(), "gone") }, 20*time.Second, 10*time.Millisecond)
	// The server notices at its idle timeout (3 s here), then waits the grace.
	require.GreaterOrEqual(t, time.Since(vanished), 2*time.Second)
	require.Equal(t, 1, o.online())
	require.Equal(t, 1.0, metricValue(t, ts.Metrics, "quicpush_presence_changes_total", "kind", "lost"))

	// A goodbye is a leave at once.
	require.NoError(t, mover.Close())
	require.Eventually(t, func() bool { return o.online() == 0 }, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, []string{"gone", "mover"}, o.left())
	require.Equal(t, 1.0, metricValue(t, ts.Metrics, "quicpush_presence_changes_total", "kind", "goodbye"))
}
