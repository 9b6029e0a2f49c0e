// Package httpapi is quicpush's HTTP API for backends: publish messages,
// read a channel's history and state, and disconnect a user, with JSON in
// and out. quicpushd mounts it under /v1/ on its admin listener when it has
// an API key; docs/API.md describes every route with examples.
//
//	POST /v1/publish                         one message
//	POST /v1/publish/batch                   up to MaxBatch messages, in order, all or none
//	GET  /v1/channels/{channel...}           epoch, first, head, subscribers
//	GET  /v1/channels/{channel...}/history   ?from=&to=&limit=
//	POST /v1/users/{user}/disconnect         closes the user's connections
//
// Every request carries "Authorization: Bearer <API key>", compared in
// constant time. Bodies are capped before they are read (a single publish
// at 6 x stream.MaxMessageSize + 4 KiB, the worst case of escaped JSON; a
// batch at MaxBatch messages of the largest size in base64). Errors are
// {"error":{"code","message"}} with the status that fits:
//
//	400 malformed_json    the body is not the JSON expected (unknown fields included)
//	400 invalid_request   a field breaks a rule (channel name, id, base64, range...)
//	401 unauthorized      no or wrong API key
//	404 not_found         no such route
//	405 method_not_allowed
//	413 too_large         body, message or batch over its limit
//	503 unavailable       the store cannot serve now
//	500 internal          anything else
//
// A refused request stores nothing: every message of a batch is checked
// before any is handed to the store, and the store appends a batch in one
// transaction.
//
// The handler is safe for concurrent use.
package httpapi
