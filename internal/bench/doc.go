// Package bench runs quicpush's end-to-end benchmarks (the logic of
// "quicpush bench"): fan-out throughput, publish -> deliver latency, memory
// per idle connection, durable appends and range reads, and repair of a
// backlog; fan-out, latency and idle also against a raw quic-go baseline
// that does the same fan-out with no store and no protocol.
//
// The server runs in a child process (Config.ServerCommand starts it; the
// child calls Serve), so its CPU time (/proc/PID/stat) and RSS
// (/proc/PID/status) are its own and not the load clients'. The child also
// answers, over its stdin and stdout, for its live heap and stacks after a
// GC and its goroutines, and writes profiles on demand. The quicpush child builds
// its server from the same packages and defaults as quicpushd; the raw
// child (raw.go) writes the same number of bytes per delivery with the
// same non-blocking writer (stream.Sender), so the ratio of the two is what
// quicpush's own code costs.
//
// The load clients run in the calling process: the quicpush Go SDK for
// quicpush, a minimal reader for the raw baseline. fanout and latency set
// up both servers and their clients first, then measure them in turn, in
// slices (quicpush, raw, raw, quicpush), so that other work on a shared
// machine weighs on both alike; every result also says how much CPU the
// rest of the machine used meanwhile. The store scenario runs the Badger
// store in the calling process, as it has no network part.
//
// Every loop is bounded in count and time, and every address is 127.0.0.1.
//
// Concurrency: call Run one at a time: it counts this process's CPU time
// as its load clients' and may profile the whole process.
package bench
