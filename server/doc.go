// Package server is the quicpush server: it accepts QUIC connections,
// authenticates each client's hello on the control stream, serves one
// stream per business session (subscriptions, live pushes, publishes,
// acks) and answers repair streams from the store.
//
// Data walks one way: a publish on a session stream is queued for the
// session's publisher, appended to the Store (group commit, durable), and
// the store's Watch hands the committed messages to the hub, which encodes
// each once and queues the same bytes for every subscribed session. Each
// stream has a stream.Sender: bytes go straight into QUIC while the stream
// has flow-control credit, otherwise they queue within the connection's
// budget; a connection over its budget is closed with SLOW_CONSUMER and
// resumes after reconnecting.
//
// Subscribing registers the session with the hub and reads the channel's
// head under the hub's lock, so every message after the head is pushed live
// and every one up to it is in the store for the client to pull over repair
// streams: no hole at the seam.
//
// Metrics: a Prometheus collector per Server on Config.Registerer
// (metrics.go; docs/OPERATIONS.md lists them). Hot paths only bump atomics
// or observe histograms, and the fan-out does so once per channel batch.
//
// Concurrency: a Server is safe for concurrent use. Each connection runs a
// goroutine per open stream (none per subscription), which only waits for
// the next frame and hands it to a worker shared by all connections, so
// that an idle stream's goroutine keeps the smallest stack (frames.go);
// Close waits for all of them. Shutdown sends GOAWAY, waits for clients to
// leave, then closes.
package server
