package bench

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"slices"
	"time"
)

// The scenarios.
const (
	Fanout  = "fanout"  // 1 channel x N subscribers: deliveries/s, server CPU per delivery
	Latency = "latency" // publish -> deliver percentiles at a fixed rate
	Idle    = "idle"    // N idle connections: server RSS, heap, goroutines per connection
	Store   = "store"   // durable appends with group commit, then range reads
	Repair  = "repair"  // a backlog of K messages pulled after a disconnect
)

// Scenarios lists the scenarios in the order "all" runs them.
var Scenarios = []string{Fanout, Latency, Idle, Store, Repair}

// Config is one run of a scenario. Zero values take the scenario's
// defaults, listed with each field.
type Config struct {
	Scenario string
	// Subscribers of the channel (fanout and latency: 1000; repair: 1), or
	// the idle connections (idle: 1000).
	Subscribers int
	// Rate is messages published per second (latency: 50). Fanout's zero
	// means as fast as the slowest subscriber allows: Window messages in
	// flight, a message being in flight until every subscriber has it.
	Rate   float64
	Window int // fanout without Rate: 16
	// Duration is the measuring time of each server (10 s); fanout,
	// latency and store split it into slices taken in turn with the
	// baseline's.
	// Warmup is how long the load runs before it (1 s; negative: none), so
	// that connections and buffers are settled.
	Duration time.Duration
	Warmup   time.Duration
	// Messages, if positive, ends the measuring once that many messages
	// were published (store: appended), before Duration.
	Messages int
	// Size is the payload of a message in bytes (100; at least 16: a
	// timestamp and a number).
	Size int
	// Publishers are the publishes in flight at once (16), or the
	// appending goroutines (store: 64).
	Publishers int
	// Batch is how many messages one store Append call holds (store: 16).
	Batch int
	// Backlog is how many messages were published while the repair
	// scenario's subscribers were away (100000).
	Backlog int
	// Baseline also runs the raw baseline: quic-go alone (fanout, latency,
	// idle), or Badger alone, writing the same records (store).
	Baseline bool
	// ProfileDir, if set, receives a CPU profile of each server over each
	// measuring time, SCENARIO-KIND-N.pprof, and of the load clients,
	// SCENARIO-KIND-N-load.pprof (store: store-KIND-load.pprof); and for idle,
	// each server's heap profile and goroutines.
	ProfileDir string

	// ServerCommand returns the command that runs a server child of kind
	// (KindQuicpush or KindRaw): a process that calls Serve with its stdin
	// and stdout. Required for every scenario but store.
	ServerCommand func(kind string) *exec.Cmd
	// Stderr receives the server children's logs. Nil: discarded.
	Stderr io.Writer
	// Progress, if set, is called about every 250 ms with a one-line status.
	Progress func(status string)
	// Logger receives the load clients' logs. Nil: warnings and errors go
	// to Stderr.
	Logger *slog.Logger
}

// dialTimeout bounds each connection of a load client.
const dialTimeout = 10 * time.Second

func (c Config) withDefaults() (Config, error) {
	if !slices.Contains(Scenarios, c.Scenario) {
		return c, fmt.Errorf("unknown scenario %q (one of %v)", c.Scenario, Scenarios)
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	switch c.Scenario {
	case Repair:
		def(&c.Subscribers, 1)
	default:
		def(&c.Subscribers, 1000)
	}
	if c.Scenario == Latency && c.Rate == 0 {
		c.Rate = 50
	}
	def(&c.Window, 16)
	def(&c.Size, 100)
	def(&c.Backlog, 100000)
	def(&c.Batch, 16)
	if c.Scenario == Store {
		def(&c.Publishers, 64)
	}
	def(&c.Publishers, 16)
	if c.Duration == 0 {
		c.Duration = 10 * time.Second
	}
	switch {
	case c.Warmup == 0:
		c.Warmup = time.Second
	case c.Warmup < 0:
		c.Warmup = 0
	}
	if c.Stderr == nil {
		c.Stderr = io.Discard
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(c.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if c.Progress == nil {
		c.Progress = func(string) {}
	}
	switch {
	case c.Subscribers < 1 || c.Window < 1 || c.Publishers < 1 || c.Batch < 1 || c.Backlog < 1:
		return c, errors.New("subscribers, window, publishers, batch and backlog must be positive")
	case c.Window > 4096:
		return c, errors.New("window must be at most 4096")
	case c.Rate < 0 || c.Messages < 0 || c.Duration < 0:
		return c, errors.New("rate, messages and duration must not be negative")
	case c.Size < 16 || c.Size > 60<<10:
		return c, errors.New("size must be between 16 bytes and 60 KiB")
	case c.Scenario != Store && c.ServerCommand == nil:
		return c, errors.New("bench: Config.ServerCommand is required")
	}
	return c, nil
}
