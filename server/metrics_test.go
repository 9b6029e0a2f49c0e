package server_test

import (
	"context"
	"crypto/tls"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/client"
	"github.com/quicpush/quicpush/server"
	"github.com/quicpush/quicpush/store/memstore"
	"github.com/quicpush/quicpush/stream"
)

// metricValue returns the series name{labels} gathered from g: a counter's
// or gauge's value, a histogram's sample count. labels are name, value
// pairs. It fails the test if the series does not exist.
func metricValue(t testing.TB, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	families, err := g.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			for i := 0; i < len(labels); i += 2 {
				if !hasLabel(m, labels[i], labels[i+1]) {
					continue metrics
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return 0
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue() == value
		}
	}
	return false
}

// gatherer gathers c alone, with a pedantic registry's checks.
func gatherer(c prometheus.Collector) prometheus.Gatherer {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	return reg
}

// The metrics follow Prometheus' naming rules, collect what they describe,
// and keep label sets fixed.
func TestMetricsLint(t *testing.T) {
	ts := runServer(t, server.Config{})
	problems, err := testutil.CollectAndLint(ts.MetricsCollector())
	require.NoError(t, err)
	require.Empty(t, problems)
	for name, n := range map[string]int{
		"quicpush_connections": 1, "quicpush_streams": 3, "quicpush_publishes_total": 8, "quicpush_pushes_total": 3,
		"quicpush_droppable_drops_total": 2, "quicpush_repair_requests_total": 3, "quicpush_goaways_total": 2,
		"quicpush_head_notices_total": 3, "quicpush_token_refreshes_total": 2, "quicpush_push_latency_seconds": 1,
	} {
		require.Equal(t, n, testutil.CollectAndCount(ts.MetricsCollector(), name), name)
	}
}

// Each Server registers its collector once; a second one on the same
// Registerer is refused until the first is closed. Nil means the default
// registry.
func TestMetricsRegistration(t *testing.T) {
	reg := prometheus.NewRegistry()
	first := runServer(t, server.Config{Registerer: reg})
	_, err := server.New(server.Config{Store: first.Store, TLSConfig: first.clientTLS(t), Registerer: reg})
	var dup prometheus.AlreadyRegisteredError
	require.True(t, errors.As(err, &dup), "%v", err)
	require.ErrorContains(t, err, "each Server needs its own Config.Registerer")
	first.Close()
	n, err := testutil.GatherAndCount(reg)
	require.NoError(t, err)
	require.Zero(t, n, "Close unregisters")
	runServer(t, server.Config{Registerer: reg})

	srv, err := server.New(server.Config{Store: memstore.New(memstore.Options{}), TLSConfig: &tls.Config{}, Logger: quietLog})
	require.NoError(t, err)
	require.Zero(t, metricValue(t, prometheus.DefaultGatherer, "quicpush_connections"))
	require.NoError(t, srv.Close())
	n, err = testutil.GatherAndCount(prometheus.DefaultGatherer, "quicpush_connections")
	require.NoError(t, err)
	require.Zero(t, n)
}

// A real QUIC flow (connect, subscribe, publish, ack, repair, leave) moves
// the metrics that describe it.
func TestMetricsFlow(t *testing.T) {
	ts := runServer(t, server.Config{Authorize: func(_ context.Context, ev server.AuthorizeEvent) error {
		if ev.Action == server.ActionPublish && ev.Channel == "room/locked" {
			return errors.New("locked")
		}
		return nil
	}})
	reg := ts.Metrics
	value := func(name string, labels ...string) float64 {
		t.Helper()
		return metricValue(t, reg, name, labels...)
	}
	eventually := func(want float64, name string, labels ...string) {
		t.Helper()
		require.Eventually(t, func() bool { return value(name, labels...) == want }, 10*time.Second, 5*time.Millisecond,
			"%s%v = %v, want %v", name, labels, value(name, labels...), want)
	}
	ctx := t.Context()

	rec := newRecorder()
	sub := dial(t, ts, client.Config{})
	_, err := sub.Session("s").Subscribe(ctx, "room/m", client.SubscribeOptions{}, rec.handle)
	require.NoError(t, err)
	pub := dial(t, ts, client.Config{})
	eventually(2, "quicpush_connections")
	require.Equal(t, 2.0, value("quicpush_connections_accepted_total"))
	eventually(2, "quicpush_streams", "type", "control") // counted once the Welcome is sent
	require.Equal(t, 1.0, value("quicpush_streams", "type", "session"))

	for i := range 3 {
		_, err := pub.Session("p").Publish(ctx, "room/m", []byte("m"), client.PublishOptions{ID: string(rune('a' + i))})
		require.NoError(t, err)
	}
	res, err := pub.Session("p").Publish(ctx, "room/m", []byte("m"), client.PublishOptions{ID: "a"})
	require.NoError(t, err)
	require.True(t, res.Duplicate)
	_, err = pub.Session("p").Publish(ctx, "room/locked", []byte("m"), client.PublishOptions{})
	require.ErrorIs(t, err, &stream.Error{Code: stream.Forbidden})
	rec.waitCount(t, "room/m", 3, 5*time.Second)
	require.Equal(t, 3.0, value("quicpush_publishes_total", "class", "reliable", "outcome", "stored"))
	require.Equal(t, 1.0, value("quicpush_publishes_total", "class", "reliable", "outcome", "duplicate"))
	require.Equal(t, 1.0, value("quicpush_publishes_total", "class", "reliable", "outcome", "refused"))
	require.Equal(t, 2.0, value("quicpush_streams", "type", "session"))
	require.Equal(t, 4.0, value("quicpush_store_append_duration_seconds"))
	require.Equal(t, 4.0, sampleSum(t, reg, "quicpush_store_append_batch_size"), "one message per call")
	eventually(3, "quicpush_pushes_total", "class", "reliable", "transport", "stream")
	require.GreaterOrEqual(t, value("quicpush_push_latency_seconds"), 1.0)
	require.LessOrEqual(t, value("quicpush_push_latency_seconds"), 3.0, "observed once per fan-out batch")
	require.Eventually(t, func() bool { return value("quicpush_acks_total") >= 1 }, 5*time.Second, 5*time.Millisecond,
		"the subscriber acks what it handled")

	_, err = pub.Session("p").Publish(ctx, "room/m", []byte("like"), client.PublishOptions{Droppable: true})
	require.NoError(t, err)
	require.Equal(t, 1.0, value("quicpush_publishes_total", "class", "droppable", "outcome", "accepted"))
	require.Eventually(t, func() bool {
		return value("quicpush_pushes_total", "class", "droppable", "transport", "datagram")+
			value("quicpush_pushes_total", "class", "droppable", "transport", "stream") == 1
	}, 5*time.Second, 5*time.Millisecond)

	msgs, gap, err := pub.History(ctx, "room/m", 1, 0)
	require.NoError(t, err)
	require.Nil(t, gap)
	require.Len(t, msgs, 3)
	eventually(1, "quicpush_repair_requests_total", "outcome", "served")
	require.Equal(t, 3.0, value("quicpush_repair_messages_total"))
	require.Equal(t, 1.0, value("quicpush_repair_duration_seconds"))
	eventually(0, "quicpush_streams", "type", "repair")

	require.NoError(t, sub.Close())
	require.NoError(t, pub.Close())
	eventually(0, "quicpush_connections")
	eventually(0, "quicpush_streams", "type", "control")
	eventually(0, "quicpush_streams", "type", "session")
	for _, outcome := range []string{"failed", "rate_limited"} {
		require.Zero(t, value("quicpush_publishes_total", "class", "reliable", "outcome", outcome), outcome)
	}
	require.Zero(t, value("quicpush_slow_consumer_closes_total"))
}

// sampleSum is the sum of the histogram name gathered from g.
func sampleSum(t testing.TB, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	families, err := g.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() == name && len(f.GetMetric()) == 1 {
			return f.GetMetric()[0].GetHistogram().GetSampleSum()
		}
	}
	t.Fatalf("no histogram %s", name)
	return 0
}
