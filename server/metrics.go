package server

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/quicpush/quicpush/store"
	"github.com/quicpush/quicpush/stream"
	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// metrics is the server's Prometheus collector, registered once per Server
// on Config.Registerer. Hot paths only bump atomics (the counters of
// flow.go and the fields below) or observe a histogram; Collect turns them
// into metrics at scrape time. Labels are bounded sets: never a channel or
// a user. docs/OPERATIONS.md lists every metric.
type metrics struct {
	flow  *counters
	conns func() int

	connectionsAccepted                           atomic.Uint64
	controlStreams, sessions, repairStreams       atomic.Int64
	stored, duplicates, storeFailed, refused      atomic.Uint64 // reliable publishes
	droppableAccepted, droppableRefused           atomic.Uint64
	reliablePushed, droppableStreamPushed         atomic.Uint64
	acks                                          atomic.Uint64
	repairsServed, repairsRefused, repairsAborted atomic.Uint64
	repairMessages                                atomic.Uint64
	pathChanges, goAwayShutdown, goAwayPath       atomic.Uint64
	notifyNotices                                 atomic.Uint64
	refreshesOK, refreshesRefused                 atomic.Uint64

	confirm  confirmMetrics
	presence presenceMetrics
	chat     chatMetrics

	pushLatency, repairDuration, appendDuration, appendBatch prometheus.Histogram
}

const namespace = "quicpush"

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, nil)
}

// The descriptions are shared by every Server: one registry refuses a
// second Server's collector as a duplicate.
var (
	descConnections = desc("connections",
		"Open client connections.")
	descConnectionsAccepted = desc("connections_accepted_total",
		"Connections accepted by the QUIC listener.")
	descStreams = desc("streams",
		"Open streams by type: control (connections past the hello), session (business sessions), repair (repairs being served).", "type")
	descPublishes = desc("publishes_total",
		"Publishes by class and outcome: stored, duplicate (idempotency key seen), failed (store error) and rate_limited for reliable ones; accepted and dropped (rate limit) for droppable ones; refused (invalid, forbidden, too large) for both.", "class", "outcome")
	descPushes = desc("pushes_total",
		"Messages handed to QUIC for a subscriber, by class and transport (live fan-out; repairs are counted apart).", "class", "transport")
	descDrops = desc("droppable_drops_total",
		"Droppable messages not delivered, by reason: shed (a push dropped for a slow subscriber) or rate_limited (a publish over a connection or channel rate).", "reason")
	descAcks = desc("acks_total",
		"Ack frames received from clients.")
	descRepairs = desc("repair_requests_total",
		"Repair requests by outcome: served (RepairEnd sent), refused (answered with an Error), aborted (the client went away).", "outcome")
	descRepairMessages = desc("repair_messages_total",
		"Messages sent on repair streams.")
	descPathChanges = desc("path_changes_total",
		"Client address changes (NAT rebindings, migrations) seen on connections.")
	descGoAways = desc("goaways_total",
		"GOAWAY frames sent, by code: shutting_down (drain) or path_limit (path changes used up).", "code")
	descHeadNotices = desc("head_notices_total",
		"HeadNotice frames sent to sessions, by reason: behind (reliable pushes stopped, the client pulls), resumed, notify (notify-mode channels).", "reason")
	descSlowConsumers = desc("slow_consumer_closes_total",
		"Connections closed with SLOW_CONSUMER (send queue over its budget).")
	descRefreshes = desc("token_refreshes_total",
		"Token refreshes on open connections, by outcome: ok or refused.", "outcome")
	descCopies = desc("critical_copies_total",
		"Redundant copies of critical messages, by outcome: datagram or stream (sent that way), over_budget (not sent: the connection's copy budget was spent), failed (could not be queued).", "outcome")
	descCopyBytes = desc("critical_copy_bytes_total",
		"Bytes of the redundant copies of critical messages sent.")
)

// latencyBuckets span an in-memory append (~0.1 ms) to a stalled disk or a
// long queue (10 s).
var latencyBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

func newMetrics(flow *counters, conns func() int) *metrics {
	histogram := func(name, help string, buckets []float64) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: name, Help: help, Buckets: buckets})
	}
	return &metrics{
		flow: flow, conns: conns,
		pushLatency: histogram("push_latency_seconds",
			"Time from a reliable message's store timestamp (its commit starting) to its push handed to QUIC, once per channel per fan-out batch.", latencyBuckets),
		repairDuration: histogram("repair_duration_seconds",
			"Time to serve a repair request, from its arrival to RepairEnd (served ones only).", latencyBuckets),
		appendDuration: histogram("store_append_duration_seconds",
			"Duration of the server's Store.Append calls (durable: includes the group commit's fsync).", latencyBuckets),
		appendBatch: histogram("store_append_batch_size",
			"Messages per Store.Append call of the server (the store may commit several calls together).", prometheus.ExponentialBuckets(1, 2, 13)),
	}
}

func (m *metrics) histograms() []prometheus.Histogram {
	return []prometheus.Histogram{m.pushLatency, m.repairDuration, m.appendDuration, m.appendBatch}
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descConnections, descConnectionsAccepted, descStreams, descPublishes, descPushes, descDrops, descAcks,
		descRepairs, descRepairMessages, descPathChanges, descGoAways, descHeadNotices, descSlowConsumers, descRefreshes,
		descCopies, descCopyBytes,
		descConfirmations, descConfirmTracked, descConfirmFrames, descConfirmBytes, descPresenceWatches, descPresenceUpdates, descPresenceChanges,
		descChatMessages, descReceipts, descInboxPages, descInboxPageMessages,
	} {
		ch <- d
	}
	for _, h := range m.histograms() {
		h.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	f := m.flow
	counter := func(d *prometheus.Desc, v *atomic.Uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v.Load()), labels...)
	}
	gauge := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	gauge(descConnections, int64(m.conns()))
	counter(descConnectionsAccepted, &m.connectionsAccepted)
	gauge(descStreams, m.controlStreams.Load(), "control")
	gauge(descStreams, m.sessions.Load(), "session")
	gauge(descStreams, m.repairStreams.Load(), "repair")

	counter(descPublishes, &m.stored, "reliable", "stored")
	counter(descPublishes, &m.duplicates, "reliable", "duplicate")
	counter(descPublishes, &m.storeFailed, "reliable", "failed")
	counter(descPublishes, &f.reliableRateLimited, "reliable", "rate_limited")
	counter(descPublishes, &m.refused, "reliable", "refused")
	counter(descPublishes, &m.droppableAccepted, "droppable", "accepted")
	counter(descPublishes, &f.droppableRateLimited, "droppable", "dropped")
	counter(descPublishes, &m.droppableRefused, "droppable", "refused")

	counter(descPushes, &m.reliablePushed, "reliable", "stream")
	counter(descPushes, &m.droppableStreamPushed, "droppable", "stream")
	counter(descPushes, &f.datagramsOut, "droppable", "datagram")
	counter(descDrops, &f.droppableShed, "shed")
	counter(descDrops, &f.droppableRateLimited, "rate_limited")
	counter(descAcks, &m.acks)

	counter(descRepairs, &m.repairsServed, "served")
	counter(descRepairs, &m.repairsRefused, "refused")
	counter(descRepairs, &m.repairsAborted, "aborted")
	counter(descRepairMessages, &m.repairMessages)

	counter(descPathChanges, &m.pathChanges)
	counter(descGoAways, &m.goAwayShutdown, "shutting_down")
	counter(descGoAways, &m.goAwayPath, "path_limit")
	counter(descHeadNotices, &f.behind, "behind")
	counter(descHeadNotices, &f.resumed, "resumed")
	counter(descHeadNotices, &m.notifyNotices, "notify")
	counter(descSlowConsumers, &f.slowConsumers)
	counter(descRefreshes, &m.refreshesOK, "ok")
	counter(descRefreshes, &m.refreshesRefused, "refused")
	counter(descCopies, &f.copiesDatagram, "datagram")
	counter(descCopies, &f.copiesStream, "stream")
	counter(descCopies, &f.copiesOverBudget, "over_budget")
	counter(descCopies, &f.copiesFailed, "failed")
	counter(descCopyBytes, &f.copyBytes)
	m.confirm.collect(counter, gauge)
	m.presence.collect(counter, gauge)
	m.chat.collect(counter)
	for _, h := range m.histograms() {
		h.Collect(ch)
	}
}

// fannedOut records n reliable messages of one channel, the oldest stored
// at stored, handed to QUIC (written or queued) for each of sessions
// subscribers. Called once per fan-out batch, never per subscriber.
func (m *metrics) fannedOut(n, sessions int, stored time.Time) {
	if sessions == 0 {
		return
	}
	m.reliablePushed.Add(uint64(n * sessions))
	m.pushLatency.Observe(time.Since(stored).Seconds())
}

// published counts the store's answer to one reliable publish.
func (m *metrics) published(res store.AppendResult, err error) {
	switch {
	case err == nil && res.Duplicate:
		m.duplicates.Add(1)
	case err == nil:
		m.stored.Add(1)
	case isRequestError(err):
		m.refused.Add(1)
	default:
		m.storeFailed.Add(1)
	}
}

// isRequestError reports whether a publish was refused for what it holds,
// rather than failed.
func isRequestError(err error) bool {
	return errors.Is(err, store.ErrTooLarge) || errors.Is(err, store.ErrInvalid) || errors.Is(err, ErrInvalid)
}

// goAway counts a GOAWAY sent; the server sends none with other codes.
func (m *metrics) goAway(code stream.ErrCode) {
	switch code {
	case stream.ShuttingDown:
		m.goAwayShutdown.Add(1)
	case stream.PathLimit:
		m.goAwayPath.Add(1)
	}
}

// appendToStore is Store.Append, timed.
func (s *Server) appendToStore(ctx context.Context, reqs []store.AppendRequest) ([]store.AppendResult, error) {
	start := time.Now()
	res, err := s.cfg.Store.Append(ctx, reqs)
	s.metrics.appended(start, len(reqs))
	return res, err
}

// appended times an append of n requests that began at start.
func (m *metrics) appended(start time.Time, n int) {
	m.appendDuration.Observe(time.Since(start).Seconds())
	m.appendBatch.Observe(float64(n))
}

// refusePublish answers p with e and counts the refusal.
func (s *session) refusePublish(p *pb.Publish, e *stream.Error) error {
	if p.Class == pb.Class_CLASS_DROPPABLE {
		s.c.s.metrics.droppableRefused.Add(1)
	} else {
		s.c.s.metrics.refused.Add(1)
	}
	return s.replyError(e, p.RequestId, p.Channel)
}
