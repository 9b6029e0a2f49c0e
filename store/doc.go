// Package store is quicpush's channel log, on Badger v4.
//
// A channel is an ordered log of messages numbered 1, 2, 3... with no holes,
// plus an epoch: a random non-zero 64-bit value created and persisted with
// the channel's first message. A store that lost a channel's history gives
// it a new epoch, so that clients never take the new 1..N for duplicates.
// The channel's head (its last seq) is kept when retention deletes every
// message.
//
// # Durability and group commit
//
// Badger runs with SyncWrites: Append returns once its messages are fsynced.
// One writer goroutine owns every seq: it takes as many queued Append calls
// as fit MaxBatchEntries and MaxBatchBytes, assigns their seqs, checks their
// idempotency keys, writes messages, channel metas and idempotency keys in
// one transaction, commits it, and only then makes the new Last visible to
// Bounds and Range, calls the Watch functions, and answers the callers.
// While one batch commits, the writer builds the next from the calls queued
// meanwhile, and commits it once the first is durable: one commit in flight.
// A batch that lands while the next is already built is made visible at
// once, but its Watch call and its answers wait for that next batch, and go
// out together with it: under load, a burst is fanned out as one write per
// subscriber instead of two, at the cost of one commit's latency for at most
// every other batch (Queue lets one caller keep a call queued behind the one
// committing).
// A failed commit answers every caller of the batch with the error and hands
// its seqs out again (the next batch, built on them, is rebuilt), so seqs
// never get holes. Badger's Sequence is not used: it leaks numbers on a
// crash.
//
// An idempotency key is looked up in Badger only when a Bloom filter of the
// keys stored within the TTL says it may be there (idemfilter.go; blocked
// Bloom filters, github.com/greatroar/blobloom: one cache line per key); after a reopen, every
// key is read until a background scan has put the keys stored before into
// the filter. Within the batches being built and committed, keys are found
// by their hash in the batch's messages.
//
// Baseline (baseline.go) writes the same records with nothing but a group
// commit: the floor that quicpush bench store measures Append against.
//
// # Key layout (keys.go)
//
// A channel name maps to a numeric id, so that no channel's keys are a
// prefix of another's:
//
//	meta     0x01 name                      -> id, epoch, first, last
//	message  0x02 id seq                    -> time, from, id, data
//	idem     0x03 id len(from) from msgID   -> seq (with a TTL)
//	cursor   0x04 len(user) user channel    -> epoch, seq
//
// Ids and seqs are big-endian, so a range read is one iterator scan.
//
// # Retention
//
// Every RetentionInterval, each channel keeps its newest MaxMessages and
// those younger than MaxAge. The writer moves First and deletes the
// messages below it in the same bounded transactions as the appends (never
// DropPrefix). Space comes back through compaction; value-log GC runs every
// GCInterval but mostly finds nothing, as messages live in the LSM tree.
//
// # Concurrency
//
// Every method of DB is safe for concurrent use. Bounds.Last is the last
// durably committed seq, never one of a batch still being committed; Range
// returns nothing beyond it. Watch functions run on the writer goroutine,
// in commit order: they must not block or call Append. Close fails the
// queued Appends with ErrClosed; every later call returns an error wrapping
// ErrClosed.
//
// The subpackage memstore is an in-memory twin, and storetest the contract
// suite that both pass.
package store
