package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/quicpush/quicpush/stream"
)

type historyCmd struct {
	Channel string        `arg:"" help:"Channel to read, e.g. room/demo."`
	From    uint64        `default:"1" env:"QUICPUSH_HISTORY_FROM" placeholder:"SEQ" help:"First seq to print (default: ${default})."`
	To      uint64        `env:"QUICPUSH_HISTORY_TO" placeholder:"SEQ" help:"Last seq to print (0: up to the head)."`
	Timeout time.Duration `default:"30s" env:"QUICPUSH_HISTORY_TIMEOUT" placeholder:"D" help:"Give up after D and exit 1 (default: ${default})."`
}

// Help explains the output, below the flags of "quicpush history --help".
func (historyCmd) Help() string {
	return `Prints the same lines as sub, for the channel's current epoch: first a gap
line if seqs in the range were already deleted by retention, then one line per
stored message, in seq order, with "repaired": true.`
}

func (c *historyCmd) Validate() error {
	if c.Channel == "" {
		return nil // kong reports the missing argument
	}
	if err := stream.ValidateChannel(c.Channel); err != nil {
		return plain(err)
	}
	if c.To != 0 && c.To < c.From {
		return fmt.Errorf("--to %d is before --from %d", c.To, c.From)
	}
	return nil
}

func (c *historyCmd) Run(ctx context.Context, e *env) error {
	ctx, cancel := withTimeout(ctx, c.Timeout)
	defer cancel()
	cl, err := e.dial(ctx, nil, c.Timeout, nil)
	if err != nil {
		return err
	}
	defer cl.Close()
	// Print what was read even when reading stopped early.
	msgs, gap, err := cl.History(ctx, c.Channel, c.From, c.To)
	if gap != nil {
		if err := writeLine(e.stdout, newGapLine("", *gap)); err != nil {
			return fmt.Errorf("cannot write to stdout: %w", err)
		}
	}
	for _, m := range msgs {
		if err := writeLine(e.stdout, newMessageLine("", m)); err != nil {
			return fmt.Errorf("cannot write to stdout: %w", err)
		}
	}
	var pe *stream.Error
	switch {
	case errors.As(err, &pe):
		return fmt.Errorf("the server refused to read %s: %s: %s", c.Channel, pe.Code, pe.Message)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("timed out after %v reading %s (%d messages read)", c.Timeout, c.Channel, len(msgs))
	case err != nil:
		return fmt.Errorf("cannot read %s: %w", c.Channel, err)
	}
	return nil
}
