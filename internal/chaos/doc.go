// Package chaos holds the weak-network suite: the real quicpushd and
// quicpush sub binaries, with the lossy relay (internal/netem) between the
// server and the subscriber (the publisher is on a good network), under loss, delay, reordering and duplication crossed with
// NAT rebinding, connection migration, a blackout, a server SIGKILL and a
// subscriber SIGKILL. Every cell asserts that every reliable message is
// handed to the application exactly once and in order on every channel,
// and prints delivered/expected, duplicates, publish -> deliver latency,
// the time from heal to repaired, and migrations vs reconnects.
//
// go test ./internal/chaos runs the short matrix (CI); add -chaos.full for
// the full one that docs/WEAK-NETWORKS.md reports, and -chaos.out FILE to
// keep the results as JSON.
package chaos
