// Package client is the quicpush Go SDK.
//
// A Client holds one QUIC connection to the server and re-establishes it
// with jittered exponential backoff whenever it breaks. Each business
// Session ("classroom", "chat"...) is one stream on that connection; a
// Session subscribes to channels and publishes to them.
//
// For every subscribed channel the client keeps the channel's epoch, the
// highest seq handed to the application, the highest seq known to exist,
// and a bounded buffer of early arrivals. A missing seq waits the
// server-given hole wait, then is fetched over a separate repair stream
// (one request covering every hole up to the head), so repairs never hold
// up live pushes. After every (re)connect each channel subscribes again
// from its position and pulls what it missed the same way.
//
// Delivery guarantee: within a process, the Handler gets each reliable
// message exactly once and in seq order. After a handler returns, the
// position is saved in the PositionStore and then acknowledged to the
// server. If the process crashes after a handler returned but before the
// position was saved, that message (and only such a message) is handed
// over again after the restart: Message.Seq lets the application
// deduplicate, and an application that implements PositionStore over its
// own database can commit its effect and the position in one transaction.
// Seqs that can never be delivered (deleted by retention, or a channel
// whose history was reset) are reported to SubscribeOptions.OnGap with
// their exact range.
//
// Publish retries until the server acknowledges, across reconnects, with a
// client message id that makes the retries idempotent.
//
// Concurrency: all methods are safe for concurrent use. Each channel's
// handler runs on its own goroutine, one message at a time.
package client
