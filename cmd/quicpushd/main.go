// Command quicpushd runs the quicpush server: QUIC on a UDP port, the
// Badger store and the server's persisted keys in a data directory, and an
// admin HTTP server. It needs no flag: by default it listens on :4433, keeps
// everything in ./data and serves a dev certificate whose CA clients trust
// with --ca ./data/certs/ca.pem.
//
// With --jwt-secret-file or --jwt-public-key only clients with a valid JWT
// are accepted (package auth); without, it runs in dev mode and says so.
// With --api-key-file the admin server also serves the HTTP API for backends
// (package httpapi) under /v1/.
//
// The admin server serves /healthz, /readyz and the Prometheus metrics at
// /metrics (the server's, Go's and the process's).
//
// SIGINT or SIGTERM shut it down gracefully (clients are told to reconnect
// elsewhere, then the store is closed); SIGHUP reloads --cert and --key.
package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/quic-go/quic-go"

	"github.com/quicpush/quicpush/certs"
	"github.com/quicpush/quicpush/client/web"
	"github.com/quicpush/quicpush/httpapi"
	"github.com/quicpush/quicpush/server"
	"github.com/quicpush/quicpush/store"
)

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// shutdownTimeout bounds the wait for clients to leave after a signal.
const shutdownTimeout = 10 * time.Second

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// run runs quicpushd until ctx ends or SIGINT/SIGTERM, and returns the exit
// status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var f flags
	exited, exitCode := false, 0
	parser, err := kong.New(&f,
		kong.Name("quicpushd"),
		kong.Description("The quicpush server. No flag is needed: it serves QUIC on UDP :4433 with a dev certificate, and keeps its data in ./data."),
		kong.Writers(stdout, stderr),
		kong.Exit(func(code int) { exited, exitCode = true, code }), // --help
	)
	if err != nil {
		panic(err) // the flag definitions are wrong
	}
	kctx, err := parser.Parse(args)
	if exited {
		return exitCode
	}
	if err != nil {
		fmt.Fprintf(stderr, "quicpushd: error: %v (see quicpushd --help)\n", err)
		return exitUsage
	}
	if f.PrintConfig {
		if err := printConfig(stdout, kctx); err != nil {
			fmt.Fprintf(stderr, "quicpushd: error: cannot write to stdout: %v\n", err)
			return exitFailure
		}
		return exitOK
	}
	a, err := loadAccess(f)
	if err != nil {
		fmt.Fprintf(stderr, "quicpushd: error: %v (see quicpushd --help)\n", err)
		return exitUsage
	}
	log := newLogger(stderr, f.LogLevel, f.LogFormat)
	if err := serve(ctx, f, a, log); err != nil {
		log.Error(err.Error())
		return exitFailure
	}
	log.Info("stopped")
	return exitOK
}

// serve wires the server together, serves until a signal, and shuts down.
func serve(ctx context.Context, f flags, a access, log *slog.Logger) (err error) {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	// Both ports are bound before anything touches the data directory, so
	// a port in use fails at once. The admin server serves from the start:
	// /readyz says 503 while the store opens (replaying Badger's log can
	// take a while).
	pc, err := net.ListenPacket("udp", f.Listen)
	if err != nil {
		return fmt.Errorf("cannot listen on UDP %s: %w — is another quicpushd running? (choose another address with --listen)", f.Listen, err)
	}
	defer pc.Close() // the server does not close a PacketConn it was given
	var ready atomic.Bool
	adminLn, err := net.Listen("tcp", f.Admin)
	if err != nil {
		return fmt.Errorf("cannot listen on TCP %s for the admin server: %w — is another quicpushd running? (choose another address with --admin)", f.Admin, err)
	}
	api := &apiSlot{on: a.apiKey != nil}
	reg := newRegistry()
	metrics := promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)})
	pages := &webSlot{}
	admin := &http.Server{Handler: adminHandler(&ready, api, metrics, pages), ReadHeaderTimeout: 5 * time.Second}
	go admin.Serve(adminLn)
	defer admin.Close()

	if err := os.MkdirAll(f.Data, 0o700); err != nil {
		return fmt.Errorf("cannot use data directory %s: %w (choose another with --data)", f.Data, err)
	}
	db, err := store.Open(filepath.Join(f.Data, "store"), store.Options{Logger: log.With("component", "store")})
	if err != nil {
		return fmt.Errorf("cannot open the store in %s: %w (is another quicpushd using --data %s?)", f.Data, err, f.Data)
	}
	defer func() {
		if cerr := db.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("closing the store: %w", cerr)
		}
	}()

	cert, err := loadCertificate(f, log)
	if err != nil {
		return err
	}
	tlsConf := &tls.Config{GetCertificate: cert.GetCertificate}
	browsers, err := newWebAccess(f, adminLn.Addr())
	if err != nil {
		return err
	}
	keys, err := certs.LoadOrCreateKeys(f.Data)
	if err != nil {
		return fmt.Errorf("cannot load the server keys: %w", err)
	}
	if _, err := keys.RotateTicketKeys(time.Now(), 24*time.Hour); err != nil {
		return fmt.Errorf("cannot rotate the session ticket keys: %w", err)
	}
	tlsConf.SetSessionTicketKeys(keys.TicketKeys())

	a.logMode(log)
	cfg := server.Config{
		Store:             db,
		TLSConfig:         tlsConf,
		Logger:            log,
		Registerer:        reg,
		Heartbeat:         f.Heartbeat,
		WebTransport:      browsers.serverConfig(),
		StatelessResetKey: (*quic.StatelessResetKey)(&keys.StatelessResetKey),
		TokenGeneratorKey: (*quic.TokenGeneratorKey)(&keys.TokenGeneratorKey),
	}
	if a.verifier != nil {
		cfg.Authenticate, cfg.Authorize = a.verifier.Authenticate, a.verifier.Authorize
	}
	srv, err := server.New(cfg)
	if err != nil {
		return err
	}
	defer srv.Close()
	addr, err := srv.Listen(pc)
	if err != nil {
		return err
	}
	if api.on {
		h, err := httpapi.New(httpapi.Config{Server: srv, APIKey: a.apiKey, Logger: log.With("component", "httpapi")})
		if err != nil {
			return err
		}
		api.h.Store(h)
		log.Info("HTTP API enabled", "url", "http://"+adminLn.Addr().String()+"/v1/")
	} else {
		log.Info("HTTP API disabled: no --api-key-file")
	}
	pages.h.Store(web.Handler(func() web.PageConfig { return browsers.pageConfig(addr, log.Error) }))
	log.Info("demo classroom", "teacher", "http://"+adminLn.Addr().String()+"/demo/teacher.html", "student", "http://"+adminLn.Addr().String()+"/demo/student.html")
	log.Info("quicpushd listening", "addr", addr.String(), "admin", adminLn.Addr().String(), "data", f.Data)
	ready.Store(true) // after the line: whoever waits for /readyz finds it written

	for ctx.Err() == nil {
		select {
		case <-hup:
			reload(f, cert, log)
		case <-ctx.Done():
		}
	}

	stop() // a second signal kills at once
	ready.Store(false)
	log.Info("shutting down", "timeout", shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("clients still connected were disconnected", "err", err)
	}
	return nil
}

// loadCertificate loads --cert and --key, or the dev certificate, which it
// creates on first use.
func loadCertificate(f flags, log *slog.Logger) (*certs.Reloader, error) {
	certFile, keyFile := f.Cert, f.Key
	if certFile == "" {
		dev, err := certs.EnsureDev(filepath.Join(f.Data, "certs"), nil)
		if err != nil {
			return nil, fmt.Errorf("cannot create the dev certificate: %w", err)
		}
		log.Warn("dev certificate: clients need --ca " + dev.CA)
		certFile, keyFile = dev.Cert, dev.Key
	}
	r, err := certs.Load(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("cannot load the certificate: %w", err)
	}
	return r, nil
}

// reload re-reads --cert and --key after a renewal.
func reload(f flags, r *certs.Reloader, log *slog.Logger) {
	if f.Cert == "" {
		log.Info("SIGHUP: nothing to reload with the dev certificate")
		return
	}
	if err := r.Reload(); err != nil {
		log.Error("SIGHUP: certificate not reloaded, the current one stays in use", "err", err)
		return
	}
	log.Info("SIGHUP: certificate reloaded", "cert", f.Cert)
}

// newRegistry holds what /metrics serves: the Go runtime's and the
// process's metrics, and the server's once it runs.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

func adminHandler(ready *atomic.Bool, api, metrics, pages http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/sdk/", pages)
	mux.Handle("/demo/", pages)
	mux.Handle("GET /{$}", http.RedirectHandler("/demo/", http.StatusFound))
	mux.Handle("/v1/", api)
	mux.Handle("GET /metrics", metrics)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	return mux
}
