// Package netem is an in-process lossy UDP relay: it sits between QUIC
// clients and a server to make a weak network reproducible in tests and in
// `quicpush netem`.
//
// Clients send to [Relay.Addr]; the relay forwards to Config.Upstream and
// relays the replies back. Like a NAT, it keeps one upstream socket per
// client address, so several clients share a relay and the server sees each
// one from its own port.
//
//	r, err := netem.Start(ctx, netem.Config{
//		Upstream: serverAddr,
//		Uplink:   netem.Link{Loss: 0.05, Delay: 20 * time.Millisecond},
//		Downlink: netem.Link{Loss: 0.05, Delay: 20 * time.Millisecond},
//	})
//	...
//	r.Rebind()  // the server sees every client move to a new port
//	r.Heal()    // a perfect network from now on
//
// # What it simulates
//
// Per direction (uplink client to server, downlink server to client), see
// [Link]: random loss, delay with uniform jitter (packets then overtake one
// another), explicit reordering (a packet held back so later ones pass it),
// duplication, and a bandwidth cap with a bounded FIFO that drops when full,
// as at a router. In both directions: blackouts, on demand ([Relay.Blackout])
// or on a schedule, which also drop packets already in flight when they come
// due. NAT rebinding: [Relay.Rebind] or Config.RebindEvery moves every
// client's upstream socket to a new port and closes the old one, so what the
// server sends to the old port is lost, exactly as when a NAT mapping times
// out. Mappings of clients that stop sending expire (Config.MappingTimeout).
//
// # What it does not
//
// It does not limit datagram size (no MTU, no fragmentation: anything up to
// 64 KiB passes), send or forward ICMP (an unreachable server is silence to
// the client), corrupt or truncate payloads, mark ECN, or correlate losses
// (no Gilbert-Elliott bursts: each packet is dropped independently; use
// blackouts for bursts). The client's IP address never changes, only the
// relay's upstream port. One bandwidth queue per direction is shared by every
// client. Delays are as precise as Go timers (about a millisecond late, never
// early).
//
// # Replaying a run
//
// The random decisions come from math/rand/v2 PCG streams seeded by
// Config.Seed (one per direction); the seed is logged at start and returned
// by [Relay.Seed]. Every packet draws the same numbers whatever its fate, so
// with the same seed the nth packet of a direction meets the same random
// fate in every run. Timing-dependent effects (bandwidth queue, blackouts,
// the interleaving of several clients' packets) replay only as far as the
// timing does.
//
// # Concurrency and resources
//
// A Relay's methods are safe for concurrent use, and [Relay.Update] changes
// impairments while traffic flows. The relay runs until its context ends or
// [Relay.Close], which waits for all its goroutines: one reading clients, one
// per client mapping reading the server, one scheduler per direction for
// held packets, and one for rebinds, blackouts and expiry. Held packets are
// capped per direction (Config.MaxDelayed), so memory stays bounded.
package netem
