// Package stream is the quicpush wire protocol: the frames defined in
// quicpush.proto (generated into quicpushpb), their varint-length framing
// with a size cap checked before allocating, and the protocol error codes.
//
// Every stream carries frames encoded by AppendFrame and read by a Reader.
// docs/PROTOCOL.md describes which frames go on which stream, in which
// order, and what each error code asks of the peer.
//
// Concurrency: the functions are safe for concurrent use; a Reader belongs
// to one goroutine.
package stream
