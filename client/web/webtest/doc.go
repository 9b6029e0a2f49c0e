// Package webtest runs the browser SDK (client/web) in real headless
// Chromium against an in-process quicpush server over WebTransport on
// loopback: delivery, repair, reload, a Go and a browser subscriber side by
// side, and screenshots of the demo classroom. Chromium (Debian's
// /usr/bin/chromium) is required: without it the tests fail, unless -short.
//
// The browser never leaves loopback: every host name resolves to nothing
// (--host-resolver-rules), the pages are served on http://127.0.0.1 and
// WebTransport goes to https://127.0.0.1 with the certificate pinned by
// serverCertificateHashes.
package webtest
