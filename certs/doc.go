// Package certs holds the TLS material and server secrets quicpush keeps on
// disk: a development CA with a server certificate, a certificate that can be
// swapped while the server runs, and the keys that let a restarted server
// recognise the connections and session tickets of its previous run.
//
// # Development certificates
//
// When no certificate is configured, quicpushd calls [EnsureDev] on
// DATA/certs. The first call creates a CA (ca.pem, ca-key.pem) and a server
// certificate signed by it (server.pem, server-key.pem); later calls reuse
// them and replace only a server certificate that is about to expire, no
// longer matches the CA, or does not cover the requested hosts. Clients trust
// the CA with [CAPool] (the CLI's --ca flag). Private keys are written with
// mode 0600, and every file is replaced atomically.
//
// # Reloading
//
// [Load] returns a [Reloader] whose GetCertificate goes into
// tls.Config.GetCertificate. [Reloader.Reload] re-reads the files (e.g. on
// SIGHUP after a renewal) and switches new handshakes to the new certificate
// only if the pair parses and matches; otherwise the old one stays in use.
//
// # Server secrets
//
// [LoadOrCreateKeys] keeps DATA/keys.json (mode 0600) with a stateless reset
// key, an address token key and the session ticket keys. Without them every
// restart would make clients of the previous run wait for their idle timeout
// instead of receiving a stateless reset, and would void their 0-RTT tickets:
//
//	keys, err := certs.LoadOrCreateKeys(dataDir)
//	srk := quic.StatelessResetKey(keys.StatelessResetKey)
//	tgk := quic.TokenGeneratorKey(keys.TokenGeneratorKey)
//	tr := &quic.Transport{Conn: udpConn, StatelessResetKey: &srk, TokenGeneratorKey: &tgk}
//	tlsConf.SetSessionTicketKeys(keys.TicketKeys())
//
// Call [Keys.RotateTicketKeys] periodically and pass TicketKeys to
// SetSessionTicketKeys again whenever it rotated: a ticket then resumes for at
// least one rotation interval and at most two.
//
// # Concurrency
//
// A Reloader and a Keys are safe for concurrent use. EnsureDev and
// LoadOrCreateKeys assume one process per directory (quicpushd's data
// directory is already exclusive); they take no file locks.
package certs
