package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/quicpush/quicpush/client"
	"github.com/quicpush/quicpush/stream"
)

type pubCmd struct {
	Channel string        `arg:"" help:"Channel to publish to, e.g. room/demo."`
	Data    string        `default:"message {n}" env:"QUICPUSH_PUB_DATA" placeholder:"TEXT" help:"Message text; {n} is replaced by the message's number (1..N) (default: ${default})."`
	Count   int           `default:"1" env:"QUICPUSH_PUB_COUNT" placeholder:"N" help:"Number of messages (default: ${default})."`
	Rate    float64       `env:"QUICPUSH_PUB_RATE" placeholder:"R" help:"Messages per second (0: as fast as the server acknowledges)."`
	Class   string        `default:"reliable" enum:"reliable,droppable" env:"QUICPUSH_PUB_CLASS" help:"reliable (stored, numbered, never lost) or droppable (not stored, may be shed)."`
	ID      string        `name:"id" env:"QUICPUSH_PUB_ID" placeholder:"PREFIX" help:"Message n gets the client message id PREFIX-n, so running the same command again after a failure publishes nothing twice."`
	Session string        `default:"default" env:"QUICPUSH_PUB_SESSION" help:"Business session to publish on."`
	Timeout time.Duration `env:"QUICPUSH_PUB_TIMEOUT" placeholder:"D" help:"Give up after D (e.g. 10s) and exit 1; default: wait as long as it takes."`
	Confirm bool          `env:"QUICPUSH_PUB_CONFIRM" help:"Ask which subscribers handle each message: print progress, and the missing recipients at --wait; exit 1 unless all confirmed by then."`
	Wait    time.Duration `default:"10s" env:"QUICPUSH_PUB_WAIT" placeholder:"D" help:"With --confirm: the deadline, counted from each acknowledgement (default: ${default})."`
}

// Help explains the output, below the flags of "quicpush pub --help".
func (pubCmd) Help() string {
	return `Publishes one message after the other, so message n always gets a lower seq
than message n+1, and prints one JSON object per acknowledged message:
  {"channel","seq","epoch","id","duplicate"}
(seq is 0 for droppable messages; duplicate is true when the id was
published before and seq is the original one).

With --confirm, the recipients (the users subscribed to the channel when
the server took the message, the publisher excepted) confirm once their
client has handled it. Merged progress lines follow the acknowledgement:
  {"channel","seq","confirmed","total","state":"progress"}
then, if all confirm, one with "state":"complete" (exit 0); otherwise, at
--wait, one with "state":"deadline" and "missing" (the first 100 users,
sorted) and "missing_more" (how many beyond them), and exit 1.`
}

func (c *pubCmd) Validate() error {
	if c.Channel == "" {
		return nil // kong reports the missing argument
	}
	if err := stream.ValidateChannel(c.Channel); err != nil {
		return plain(err)
	}
	if c.Count < 1 {
		return errors.New("--count must be at least 1")
	}
	if c.Rate < 0 {
		return errors.New("--rate must not be negative")
	}
	if c.Confirm && c.Class == "droppable" {
		return errors.New("--confirm needs reliable messages: droppable ones are not acknowledged by subscribers")
	}
	if c.Confirm && (c.Wait < time.Millisecond || c.Wait > 10*time.Minute) {
		return errors.New("--wait must be between 1ms and 10m (the server's default maximum)")
	}
	if c.ID != "" {
		if err := stream.ValidateID(c.messageID(c.Count)); err != nil {
			return fmt.Errorf("--id: %v", plain(err))
		}
	}
	if n := len(c.data(c.Count)); n > stream.MaxMessageSize {
		return fmt.Errorf("--data: a message of %d bytes exceeds the limit of %d", n, stream.MaxMessageSize)
	}
	return nil
}

func (c *pubCmd) data(n int) []byte {
	return []byte(strings.ReplaceAll(c.Data, "{n}", strconv.Itoa(n)))
}

// messageID is message n's client message id; empty lets the SDK pick a
// random one.
func (c *pubCmd) messageID(n int) string {
	if c.ID == "" {
		return ""
	}
	return c.ID + "-" + strconv.Itoa(n)
}

type pubLine struct {
	Channel   string `json:"channel"`
	Seq       uint64 `json:"seq"`
	Epoch     uint64 `json:"epoch"`
	ID        string `json:"id"`
	Duplicate bool   `json:"duplicate"`
}

func (c *pubCmd) Run(ctx context.Context, e *env) error {
	ctx, cancel := withTimeout(ctx, c.Timeout)
	defer cancel()
	cl, err := e.dial(ctx, nil, c.Timeout, nil)
	if err != nil {
		return err
	}
	defer cl.Close()
	session := cl.Session(c.Session)
	out := &lineWriter{w: e.stdout}
	defer out.stop() // before cl.Close
	var confirms []*client.Confirmation
	lim := rate.NewLimiter(rate.Inf, 1)
	if c.Rate > 0 {
		lim = rate.NewLimiter(rate.Limit(c.Rate), 1)
	}
	// One publish at a time: the SDK retries a publish on its own after a
	// reconnect or a "try later", so publishes in flight together could be
	// stored out of order.
	for n := 1; n <= c.Count; n++ {
		if err := lim.Wait(ctx); err != nil {
			// The context ended, or will before the next slot.
			return c.stopped(ctx, n, false)
		}
		opts := client.PublishOptions{ID: c.messageID(n), Droppable: c.Class == "droppable"}
		if c.Confirm {
			opts.Confirm = &client.ConfirmOptions{Deadline: c.Wait, OnUpdate: out.confirmUpdate}
		}
		res, err := session.Publish(ctx, c.Channel, c.data(n), opts)
		var pe *stream.Error
		switch {
		case errors.As(err, &pe):
			return fmt.Errorf("the server refused message %d: %s: %s (%d of %d acknowledged)", n, pe.Code, pe.Message, n-1, c.Count)
		case ctx.Err() != nil:
			return c.stopped(ctx, n, true)
		case err != nil:
			return fmt.Errorf("publishing message %d failed: %w (%d of %d acknowledged)", n, err, n-1, c.Count)
		}
		if err := out.acked(pubLine{Channel: res.Channel, Seq: res.Seq, Epoch: res.Epoch, ID: res.ID, Duplicate: res.Duplicate}); err != nil {
			return fmt.Errorf("cannot write to stdout: %w", err)
		}
		if res.Confirmation != nil {
			confirms = append(confirms, res.Confirmation)
		}
	}
	return waitConfirmations(ctx, confirms, c.Wait)
}

// stopped explains a publish cut short by --timeout or a signal before
// message n was acknowledged, and how to go on.
func (c *pubCmd) stopped(ctx context.Context, n int, sent bool) error {
	why := fmt.Sprintf("timed out after %v", c.Timeout)
	if errors.Is(ctx.Err(), context.Canceled) {
		why = "interrupted"
	}
	msg := fmt.Sprintf("%s: %d of %d messages acknowledged", why, n-1, c.Count)
	if sent {
		msg += fmt.Sprintf("; message %d may or may not be stored", n)
	}
	if c.ID == "" {
		return errors.New(msg + " (with --id PREFIX, running the same command again publishes only what is missing)")
	}
	return errors.New(msg + "; run the same command again to publish the rest")
}
