// Package auth verifies quicpush's JSON Web Tokens and decides what their
// claims allow: a [Verifier] provides the server's Authenticate and
// Authorize hooks.
//
//	v, err := auth.New(auth.Config{Secret: secret})
//	srv, err := server.New(server.Config{..., Authenticate: v.Authenticate, Authorize: v.Authorize})
//
// # Tokens
//
// A token is a JWT signed with HS256 (a shared secret), EdDSA (Ed25519) or
// RS256 (RSA); a Verifier accepts the one algorithm of its key and refuses
// every other, "none" included. Its claims:
//
//	{
//	  "sub": "alice",                       // the user: 1 to 128 bytes; required
//	  "exp": 1767225600,                    // expiry, Unix seconds; required
//	  "nbf": 1767222000,                    // not before; optional
//	  "iat": 1767222000,                    // issued at; optional
//	  "subscribe": ["room/*", "user/{sub}/**"], // may subscribe to (and read) these
//	  "publish": ["room/*"],                // may publish to these
//	  "role": "teacher"                     // optional
//	}
//
// The server closes the connection at exp unless the client has refreshed
// its token first (client.Config.TokenSource). nbf and iat tolerate an
// issuer's clock running ahead by Config.Leeway; exp does not. Other claims
// (iss, aud, jti...) are ignored. [Mint] signs claims, for tests and the
// quicpush token command.
//
// # Channel patterns
//
// A channel name and a pattern are split at "/" into segments, and match
// when their segments do:
//   - "{sub}" anywhere in a pattern is first replaced by the token's subject,
//     taken literally (a "*" in a subject matches only "*");
//   - a last segment "**" matches the rest of the name: zero or more
//     segments, so "user/{sub}/**" is alice's own channels, user/alice and
//     everything below it ("**" elsewhere makes the pattern invalid);
//   - every other segment matches exactly one segment, as in path.Match:
//     "*" any run of characters, "?" one character, "[a-z]" a class, "\*"
//     a literal "*".
//
// So "room/*" matches room/math-101 but neither room/math-101/quiz nor room;
// "room/**" matches all three. A token without patterns may do nothing.
//
// # The room rule
//
// Reliable messages to channels matching "room/**" (a classroom's commands:
// sign-in, quiz card, "stop exercise") may only be published by tokens whose
// role is one of Config.RoomPublisherRoles ("teacher" and "admin" unless
// configured); other users may still publish droppable messages there
// (barrage, likes), when their publish patterns allow it.
//
// # Errors
//
// Authenticate's errors wrap [ErrInvalidToken] and reach the client as
// UNAUTHORIZED; Authorize's wrap [ErrForbidden] and reach it as FORBIDDEN.
// Their text says exactly what is wrong ("token expired at ...",
// "signature invalid: ...", "channel room/x is not in the token's subscribe
// patterns") and never contains the token.
//
// A Verifier is safe for concurrent use.
package auth
