package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/quicpush/quicpush/internal/bench"
)

type benchCmd struct {
	Scenario     string        `arg:"" optional:"" help:"fanout, latency, idle, store, repair, or all (each with its defaults)."`
	ScenarioFlag string        `name:"scenario" env:"QUICPUSH_BENCH_SCENARIO" placeholder:"SCENARIO" help:"The scenario, for those who prefer a flag."`
	Subscribers  []int         `sep:"," env:"QUICPUSH_BENCH_SUBSCRIBERS" placeholder:"N" help:"Subscribers of the channel (idle: connections); several values run the scenario once each. Default: 1000 (repair: 1)."`
	Rate         float64       `env:"QUICPUSH_BENCH_RATE" placeholder:"R" help:"Messages published per second. Default: latency 50; fanout as fast as delivery allows (see --window)."`
	Window       int           `env:"QUICPUSH_BENCH_WINDOW" placeholder:"N" help:"fanout without --rate: messages in flight, one in flight until every subscriber has it (default: 16)."`
	Duration     time.Duration `default:"10s" env:"QUICPUSH_BENCH_DURATION" placeholder:"D" help:"Measuring time of each server in each run (default: ${default})."`
	Warmup       time.Duration `default:"1s" env:"QUICPUSH_BENCH_WARMUP" placeholder:"D" help:"Load before measuring, not counted (idle: the settling time); 0: none (default: ${default})."`
	Messages     int           `env:"QUICPUSH_BENCH_MESSAGES" placeholder:"N" help:"End the measuring after N messages published (store: appended), if before --duration."`
	Size         int           `default:"100" env:"QUICPUSH_BENCH_SIZE" placeholder:"BYTES" help:"Payload of a message (default: ${default})."`
	Publishers   int           `env:"QUICPUSH_BENCH_PUBLISHERS" placeholder:"N" help:"Publishes in flight at a fixed rate or for the repair backlog (default: 16); store: appending goroutines (default: 64)."`
	Batch        int           `env:"QUICPUSH_BENCH_BATCH" placeholder:"N" help:"store: messages per append call (default: 16)."`
	Backlog      int           `env:"QUICPUSH_BENCH_BACKLOG" placeholder:"K" help:"repair: messages published while the subscribers were away (default: 100000)."`
	Baseline     bool          `default:"true" negatable:"" env:"QUICPUSH_BENCH_BASELINE" help:"Also run the raw baseline: quic-go (fanout, latency, idle), Badger (store) (default: ${default})."`
	Repeat       int           `default:"1" env:"QUICPUSH_BENCH_REPEAT" placeholder:"N" help:"Run everything N times, one round after the other; on a shared machine, the run the rest of the machine disturbed least is the one to read (see other_cpu_cores) (default: ${default})."`
	Out          string        `type:"path" env:"QUICPUSH_BENCH_OUT" placeholder:"FILE" help:"Also write every result, with the machine's description, to FILE as JSON."`
	Profile      string        `type:"path" env:"QUICPUSH_BENCH_PROFILE" placeholder:"DIR" help:"Write a CPU profile of each server over each measuring time to DIR and of the load clients (go tool pprof DIR/fanout-quicpush-1000.pprof, DIR/fanout-quicpush-1000-load.pprof); idle: a heap profile and the goroutines of each server."`
}

// Help explains the output, below the flags of "quicpush bench --help".
func (benchCmd) Help() string {
	return `Starts the server it measures as a child process (this binary, in a hidden
server mode, built from the same packages and defaults as quicpushd), so that
the server's CPU time and RSS are its own; the load clients run in this
process, on 127.0.0.1. --server, --ca and --token are not used.

  fanout   1 channel x N subscribers: deliveries/s, server CPU per delivery
  latency  publish -> deliver p50/p90/p99/max at --rate
  idle     N idle connections: server RSS, heap and goroutines per connection
  store    durable appends with group commit, then range reads (in-process)
  repair   a backlog of K messages pulled after a disconnect: msgs/s

fanout, latency and idle also run against a raw quic-go server doing the same
fan-out with no store and no protocol (fanout and latency: both servers up,
measured in turn in slices, so that other work on the machine weighs on both
alike); store against raw Badger writing the same records with a minimal group
commit (store.Baseline), in slices too. Prints one JSON object per run on stdout, a progress line while it runs and a table
at the end on stderr. Targets (printed, never asserted): fanout >= 0.8x raw
at 1000 subscribers; latency p99 <= 50 ms at 1000 subscribers x 50 msg/s;
idle <= 30 KiB more RSS per connection than raw quic-go; store >= 200k
msg/s (and >= 0.8x raw Badger); repair >= 100k msg/s. docs/BENCHMARKS.md has this machine's figures.`
}

func (c *benchCmd) Validate() error {
	switch {
	case c.Scenario == "" && c.ScenarioFlag == "":
		return errors.New("which scenario? fanout, latency, idle, store, repair or all")
	case c.Scenario != "" && c.ScenarioFlag != "" && c.Scenario != c.ScenarioFlag:
		return fmt.Errorf("two scenarios given: %s and --scenario %s", c.Scenario, c.ScenarioFlag)
	case c.Scenario == "":
		c.Scenario = c.ScenarioFlag
	}
	if c.Scenario != "all" && !slices.Contains(bench.Scenarios, c.Scenario) {
		return fmt.Errorf("unknown scenario %q: one of %s or all", c.Scenario, strings.Join(bench.Scenarios, ", "))
	}
	for _, n := range c.Subscribers {
		if n < 1 {
			return errors.New("--subscribers must be positive")
		}
	}
	if c.Duration <= 0 || c.Repeat < 1 {
		return errors.New("--duration and --repeat must be positive")
	}
	if c.Rate < 0 || c.Window < 0 || c.Warmup < 0 || c.Messages < 0 || c.Publishers < 0 || c.Batch < 0 || c.Backlog < 0 {
		return errors.New("--rate, --window, --warmup, --messages, --publishers, --batch and --backlog must not be negative")
	}
	if c.Size < 16 || c.Size > 60<<10 {
		return errors.New("--size must be between 16 (a timestamp and a number) and 61440 bytes")
	}
	return nil
}

func (c *benchCmd) Run(ctx context.Context, e *env) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("cannot find this program to start the server: %w", err)
	}
	if c.Profile != "" {
		if err := os.MkdirAll(c.Profile, 0o755); err != nil {
			return fmt.Errorf("--profile: %w", err)
		}
	}
	scenarios := []string{c.Scenario}
	if c.Scenario == "all" {
		scenarios = bench.Scenarios
	}
	subscribers := c.Subscribers
	if len(subscribers) == 0 {
		subscribers = []int{0} // the scenario's default
	}
	warmup := c.Warmup
	if warmup == 0 {
		warmup = -1 // none, in bench.Config
	}
	// The children log at warn (or below if asked): 1000 connections
	// closing at info would bury the progress line.
	level := childLogLevel(e.g.LogLevel)
	prog := newProgress(e.stderr)
	var results []bench.Result
	var lost int64
	// A failed run ends the rounds; what was measured before it is still
	// shown and written.
	var runErr error
rounds:
	for round := 0; round < c.Repeat; round++ {
		for _, scenario := range scenarios {
			for _, n := range subscribers {
				res, err := bench.Run(ctx, bench.Config{
					Scenario: scenario, Subscribers: n, Rate: c.Rate, Window: c.Window,
					Duration: c.Duration, Warmup: warmup, Messages: c.Messages, Size: c.Size,
					Publishers: c.Publishers, Batch: c.Batch, Backlog: c.Backlog,
					Baseline: c.Baseline, ProfileDir: c.Profile,
					ServerCommand: func(kind string) *exec.Cmd {
						return exec.Command(exe, "--log-level", level, "bench-server", kind)
					},
					Stderr:   prog,
					Progress: prog.status,
					Logger:   newLogger(prog, level),
				})
				prog.clear()
				if err != nil {
					runErr = err
					break rounds
				}
				if err := writeLine(e.stdout, res); err != nil {
					return fmt.Errorf("cannot write to stdout: %w", err)
				}
				results = append(results, res)
				lost += res.Quicpush.Lost
				if res.Raw != nil {
					lost += res.Raw.Lost
				}
			}
		}
	}
	if len(results) > 0 {
		fmt.Fprintln(e.stderr)
		if err := bench.WriteTable(e.stderr, results); err != nil {
			return err
		}
		if c.Out != "" {
			if err := writeResults(c.Out, results); err != nil {
				return fmt.Errorf("--out: %w", err)
			}
		}
	}
	if runErr != nil {
		return runErr
	}
	if lost > 0 {
		return fmt.Errorf("%d deliveries never arrived (see \"lost\" above)", lost)
	}
	return nil
}

func childLogLevel(level string) string {
	if level == "info" {
		return "warn"
	}
	return level
}

// writeResults writes the results and what they were measured on.
func writeResults(path string, results []bench.Result) error {
	host, _ := os.Hostname()
	doc := struct {
		Time    time.Time      `json:"time"`
		Host    string         `json:"host"`
		Go      string         `json:"go"`
		OS      string         `json:"os"`
		CPUs    int            `json:"cpus"`
		CPU     string         `json:"cpu,omitempty"`
		Results []bench.Result `json:"results"`
	}{time.Now().UTC().Truncate(time.Second), host, runtime.Version(), runtime.GOOS + "/" + runtime.GOARCH, runtime.NumCPU(), cpuModel(), results}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// cpuModel is the CPU's name from /proc/cpuinfo, if there is one.
func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// progress shows the bench's status on stderr: one line rewritten in place
// on a terminal, a line every few seconds otherwise. Logs written through
// it start on a line of their own.
type progress struct {
	w        io.Writer
	terminal bool

	mu    sync.Mutex
	shown bool // a status line is on screen (terminal)
	last  time.Time
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.terminal = true
		}
	}
	return p
}

func (p *progress) status(line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.terminal:
		fmt.Fprintf(p.w, "\r\033[K%s", line)
		p.shown = true
	case time.Since(p.last) >= 2*time.Second:
		fmt.Fprintln(p.w, line)
		p.last = time.Now()
	}
}

// clear removes the status line.
func (p *progress) clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shown {
		fmt.Fprint(p.w, "\r\033[K")
		p.shown = false
	}
}

func (p *progress) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shown {
		fmt.Fprint(p.w, "\r\033[K")
		p.shown = false
	}
	return p.w.Write(b)
}

// benchServerCmd is bench's server child: it serves until its stdin ends.
type benchServerCmd struct {
	Kind string `arg:"" enum:"quicpush,raw" help:"quicpush or raw."`
}

func (c *benchServerCmd) Run(ctx context.Context, e *env) error {
	return bench.Serve(ctx, c.Kind, os.Stdin, e.stdout, e.log)
}
