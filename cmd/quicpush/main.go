// Command quicpush is the quicpush client CLI: it subscribes, publishes,
// reads history, sends chat messages, reads inboxes and mints tokens,
// printing one JSON object per line on stdout. Logs and
// errors go to stderr. Exit status: 0 done, 1 failure (unreachable server,
// refused, timed out, not all arrived), 2 bad usage.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
	"github.com/quic-go/quic-go"

	"github.com/quicpush/quicpush/certs"
	"github.com/quicpush/quicpush/client"
	"github.com/quicpush/quicpush/stream"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// globals are the flags every command takes. Command flags read the
// environment as QUICPUSH_<COMMAND>_<FLAG>, so that one variable never
// means two things (QUICPUSH_DATA is quicpushd's data directory, not pub's
// message text).
type globals struct {
	Server   string `default:"127.0.0.1:4433" env:"QUICPUSH_SERVER" placeholder:"HOST:PORT" help:"The quicpushd to talk to (UDP) (default: ${default})."`
	CA       string `name:"ca" env:"QUICPUSH_CA" placeholder:"FILE" help:"Trust the CA in this PEM file (quicpushd's dev CA is DATA/certs/ca.pem); default: the system roots."`
	Token    string `env:"QUICPUSH_TOKEN" help:"Token sent in the hello; a dev server takes it as the user name."`
	Insecure bool   `env:"QUICPUSH_INSECURE" help:"Do not verify the server's certificate (development only)."`
	LogLevel string `default:"info" enum:"debug,info,warn,error" env:"QUICPUSH_LOG_LEVEL" help:"Log level on stderr: debug, info, warn, error."`
}

type cli struct {
	globals
	Sub     subCmd     `cmd:"" help:"Subscribe to channels and print each message handed over."`
	Pub     pubCmd     `cmd:"" help:"Publish messages to a channel and print each acknowledgement."`
	History historyCmd `cmd:"" help:"Print a channel's stored messages."`
	Send    sendCmd    `cmd:"" help:"Send a chat message to a user and print the acknowledgement, then the delivered/read receipts."`
	Inbox   inboxCmd   `cmd:"" help:"Read your inbox: the count of what waits, then the records in pages."`
	Netem   netemCmd   `cmd:"" help:"Run a lossy UDP relay in front of a server (loss, delay, reordering, blackouts, NAT rebinding)."`
	Token   tokenCmd   `cmd:"" help:"Mint a signed token (JWT) for a server that checks them."`
	Bench   benchCmd   `cmd:"" help:"Benchmark a quicpush server it starts, beside a raw quic-go baseline (fanout, latency, idle, store, repair)."`

	BenchServer benchServerCmd `cmd:"" name:"bench-server" hidden:"" help:"The server child of bench."`
}

func (c *cli) Validate() error {
	if _, _, err := net.SplitHostPort(c.Server); err != nil {
		return fmt.Errorf("--server %q is not HOST:PORT: %v", c.Server, err)
	}
	return nil
}

// env is what a command runs with, besides its context.
type env struct {
	stdout io.Writer
	stderr io.Writer // for what people read: progress, tables
	log    *slog.Logger
	g      globals
}

// run parses args and runs the command; it returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var c cli
	exited, exitCode := false, 0
	parser, err := kong.New(&c,
		kong.Name("quicpush"),
		kong.Description("The quicpush client: results go to stdout as one JSON object per line, logs and errors to stderr."),
		kong.Writers(stdout, stderr),
		// --help calls Exit; parsing then goes on, so remember it and
		// ignore what follows (e.g. a missing argument).
		kong.Exit(func(code int) { exited, exitCode = true, code }),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
	)
	if err != nil {
		panic(err) // the flag definitions above are wrong
	}
	kctx, err := parser.Parse(args)
	if exited {
		return exitCode
	}
	if err != nil {
		fmt.Fprintf(stderr, "quicpush: error: %v (see %s --help)\n", err, commandPath(err))
		return exitUsage
	}
	kctx.BindTo(ctx, (*context.Context)(nil))
	if err := kctx.Run(&env{stdout: stdout, stderr: stderr, log: newLogger(stderr, c.LogLevel), g: c.globals}); err != nil {
		fmt.Fprintf(stderr, "quicpush: error: %v\n", err)
		return exitFailure
	}
	return exitOK
}

// commandPath names the command whose flags were wrong, for the --help hint.
func commandPath(err error) string {
	var pe *kong.ParseError
	if errors.As(err, &pe) && pe.Context != nil && pe.Context.Selected() != nil {
		return pe.Context.Selected().FullPath()
	}
	return "quicpush"
}

// plain drops the protocol wrapping ("quicpush: local error BAD_REQUEST:")
// from the error of a local check, for a usage message.
func plain(err error) error {
	var pe *stream.Error
	if errors.As(err, &pe) {
		return errors.New(pe.Message)
	}
	return err
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	l.UnmarshalText([]byte(level)) // kong's enum has checked it
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

// dial connects to the server, giving up after timeout (zero: the SDK's
// 5 s), and turns the usual failures into advice. onState, if not nil,
// follows the connection's state.
func (e *env) dial(ctx context.Context, state client.PositionStore, timeout time.Duration, onState func(client.State)) (*client.Client, error) {
	host, _, _ := net.SplitHostPort(e.g.Server) // checked by Validate
	if host == "" {
		host = "localhost"
	}
	tlsConf := &tls.Config{ServerName: host}
	if e.g.CA != "" {
		pool, err := certs.CAPool(e.g.CA)
		if err != nil {
			return nil, fmt.Errorf("cannot use --ca %s: %w", e.g.CA, err)
		}
		tlsConf.RootCAs = pool
	}
	if e.g.Insecure {
		e.log.Warn("--insecure: the server's certificate is not verified; never use this outside development")
		tlsConf.InsecureSkipVerify = true
	}
	if timeout <= 0 || timeout > 5*time.Second {
		timeout = 5 * time.Second
	}
	c, err := client.Dial(ctx, e.g.Server, client.Config{
		TLSConfig:   tlsConf,
		Token:       e.g.Token,
		ClientID:    "quicpush-cli",
		State:       state,
		Logger:      e.log,
		DialTimeout: timeout,
		OnState:     onState,
	})
	if err != nil {
		return nil, e.explain(err, timeout)
	}
	return c, nil
}

// explain says what a connection error means and what to do about it.
func (e *env) explain(err error, timeout time.Duration) error {
	var (
		certErr     *tls.CertificateVerificationError
		protoErr    *stream.Error
		idleErr     *quic.IdleTimeoutError
		handshakeTO *quic.HandshakeTimeoutError
	)
	switch {
	case errors.As(err, &certErr):
		advice := "pass the CA that signed it with --ca (quicpushd's dev CA: --ca ./data/certs/ca.pem)"
		if e.g.CA != "" {
			advice = fmt.Sprintf("--ca %s is not the CA that signed it (quicpushd's dev CA is DATA/certs/ca.pem, e.g. --ca ./data/certs/ca.pem)", e.g.CA)
		}
		return fmt.Errorf("the certificate of %s is not trusted (%v) — %s", e.g.Server, certErr.Err, advice)
	case errors.As(err, &protoErr):
		return fmt.Errorf("%s refused the connection: %s: %s", e.g.Server, protoErr.Code, protoErr.Message)
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &idleErr), errors.As(err, &handshakeTO):
		return fmt.Errorf("cannot reach %s: no answer within %v — is quicpushd running? (start it with: go run ./cmd/quicpushd)", e.g.Server, timeout)
	case errors.Is(err, context.Canceled):
		return errors.New("interrupted while connecting")
	default:
		return fmt.Errorf("cannot connect to %s: %w", e.g.Server, err)
	}
}

// withTimeout bounds ctx by d unless d is zero.
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}
