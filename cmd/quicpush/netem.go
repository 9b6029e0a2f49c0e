package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/quicpush/quicpush/internal/netem"
)

// netemCmd runs the lossy UDP relay between clients and a server, to try
// quicpush on a bad network: point quicpush at --listen, the relay
// forwards to --upstream.
type netemCmd struct {
	Listen        string        `default:"127.0.0.1:4434" env:"QUICPUSH_NETEM_LISTEN" placeholder:"HOST:PORT" help:"UDP address clients connect to (default: ${default})."`
	Upstream      string        `env:"QUICPUSH_NETEM_UPSTREAM" placeholder:"HOST:PORT" help:"The server's UDP address; default: --server."`
	Loss          float64       `env:"QUICPUSH_NETEM_LOSS" placeholder:"PCT" help:"Packets dropped, in percent, each way."`
	Delay         time.Duration `env:"QUICPUSH_NETEM_DELAY" placeholder:"D" help:"One-way delay (e.g. 25ms: 50 ms RTT)."`
	Jitter        time.Duration `env:"QUICPUSH_NETEM_JITTER" placeholder:"D" help:"Delay varies uniformly by +-D."`
	Reorder       float64       `env:"QUICPUSH_NETEM_REORDER" placeholder:"PCT" help:"Packets held back 10 ms so that later ones overtake them, in percent."`
	Duplicate     float64       `env:"QUICPUSH_NETEM_DUPLICATE" placeholder:"PCT" help:"Packets sent twice, in percent."`
	Bandwidth     int           `env:"QUICPUSH_NETEM_BANDWIDTH" placeholder:"BYTES/S" help:"Cap each direction at this rate (0: unlimited)."`
	BlackoutEvery time.Duration `env:"QUICPUSH_NETEM_BLACKOUT_EVERY" placeholder:"D" help:"Drop everything for --blackout-for every D."`
	BlackoutFor   time.Duration `env:"QUICPUSH_NETEM_BLACKOUT_FOR" placeholder:"D" help:"Length of each blackout."`
	RebindEvery   time.Duration `env:"QUICPUSH_NETEM_REBIND_EVERY" placeholder:"D" help:"Move each client's upstream port every D, as a NAT whose mapping expired."`
	Seed          int64         `env:"QUICPUSH_NETEM_SEED" help:"Seed of the random decisions, to replay a run (0: random, printed)."`
	Duration      time.Duration `env:"QUICPUSH_NETEM_DURATION" placeholder:"D" help:"Stop after D; default: run until interrupted."`
}

func (c *netemCmd) Validate() error {
	for name, pct := range map[string]float64{"--loss": c.Loss, "--reorder": c.Reorder, "--duplicate": c.Duplicate} {
		if pct < 0 || pct > 100 {
			return fmt.Errorf("%s must be a percentage between 0 and 100", name)
		}
	}
	if (c.BlackoutEvery > 0) != (c.BlackoutFor > 0) || (c.BlackoutEvery > 0 && c.BlackoutFor >= c.BlackoutEvery) {
		return errors.New("--blackout-every and --blackout-for go together, with --blackout-for shorter")
	}
	return nil
}

func (c *netemCmd) Run(ctx context.Context, e *env) error {
	ctx, cancel := withTimeout(ctx, c.Duration)
	defer cancel()
	upstream := c.Upstream
	if upstream == "" {
		upstream = e.g.Server
	}
	link := netem.Link{
		Loss: c.Loss / 100, Delay: c.Delay, Jitter: c.Jitter,
		Reorder: c.Reorder / 100, Duplicate: c.Duplicate / 100, Bandwidth: c.Bandwidth,
	}
	relay, err := netem.Start(ctx, netem.Config{
		Listen: c.Listen, Upstream: upstream, Uplink: link, Downlink: link, Seed: c.Seed,
		RebindEvery: c.RebindEvery, BlackoutEvery: c.BlackoutEvery, BlackoutFor: c.BlackoutFor, Logger: e.log,
	})
	if err != nil {
		return fmt.Errorf("cannot start the relay: %w", err)
	}
	defer relay.Close()
	if err := writeLine(e.stdout, map[string]any{"listen": relay.Addr().String(), "upstream": upstream, "seed": relay.Seed()}); err != nil {
		return err
	}
	<-ctx.Done()
	relay.Close()
	return writeLine(e.stdout, map[string]any{"stats": relay.Stats()})
}
