package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/quicpush/quicpush/client"
	"github.com/quicpush/quicpush/stream"
)

type presenceCmd struct {
	Channel string        `arg:"" help:"Channel whose presence to show, e.g. room/demo."`
	Members bool          `default:"true" negatable:"" env:"QUICPUSH_PRESENCE_MEMBERS" help:"Print the online users, page by page (default: ${default})."`
	Page    int           `default:"100" env:"QUICPUSH_PRESENCE_PAGE" placeholder:"N" help:"Users per page, 1 to 1000 (default: ${default})."`
	Follow  bool          `env:"QUICPUSH_PRESENCE_FOLLOW" help:"Then print the merged updates until interrupted (or for --for D). Without it the command exits after the pages."`
	For     time.Duration `env:"QUICPUSH_PRESENCE_FOR" placeholder:"D" help:"With --follow: stop after D (e.g. 1m) and exit 0."`
	Session string        `default:"presence" env:"QUICPUSH_PRESENCE_SESSION" help:"Business session to use."`
}

func (presenceCmd) Help() string {
	return `Prints the channel's online count, then its online users in pages, then,
with --follow, the merged updates the server sends (at most one per
interval, 1 s by default), one JSON object per line:
  {"channel","online","snapshot":true}                      the count now
  {"channel","users":[...],"online","next"}                 a page of users
  {"channel","online","joined","left","joined_count","left_count"}  an update
A user is online while one of its sessions subscribes to the channel, and
for the server's grace period (10 s by default) after its connection was
lost without a goodbye. Watching does not make this client online.`
}

func (c *presenceCmd) Validate() error {
	if c.Channel == "" {
		return nil
	}
	if err := stream.ValidateChannel(c.Channel); err != nil {
		return plain(err)
	}
	if c.Page < 1 || c.Page > 1000 {
		return errors.New("--page must be 1 to 1000")
	}
	if c.For < 0 || (c.For > 0 && !c.Follow) {
		return errors.New("--for D needs --follow and a positive D")
	}
	return nil
}

type presenceLine struct {
	Channel     string   `json:"channel"`
	Online      int      `json:"online"`
	Snapshot    bool     `json:"snapshot,omitempty"`
	Joined      []string `json:"joined,omitempty"`
	Left        []string `json:"left,omitempty"`
	JoinedCount int      `json:"joined_count,omitempty"`
	LeftCount   int      `json:"left_count,omitempty"`
}

type membersLine struct {
	Channel string   `json:"channel"`
	Users   []string `json:"users"`
	Online  int      `json:"online"`
	Next    string   `json:"next"`
}

func (c *presenceCmd) Run(ctx context.Context, e *env) error {
	cl, err := e.dial(ctx, nil, 0, nil)
	if err != nil {
		return err
	}
	defer cl.Close()
	session := cl.Session(c.Session)
	out := &lineWriter{w: e.stdout}
	// Updates wait until the pages are out, so the lines read in order.
	updates := make(chan client.PresenceUpdate, 64)
	w, err := session.WatchPresence(ctx, c.Channel, func(u client.PresenceUpdate) {
		select {
		case updates <- u:
		default: // never block the reader: the next update has the count
		}
	})
	if err != nil {
		return c.refused(err)
	}
	defer w.Close()
	first := <-updates
	out.write(presenceLine{Channel: first.Channel, Online: first.Online, Snapshot: true})
	if c.Members {
		after := ""
		for {
			page, err := session.PresenceMembers(ctx, c.Channel, after, c.Page)
			if err != nil {
				return c.refused(err)
			}
			out.write(membersLine{Channel: page.Channel, Users: page.Users, Online: page.Online, Next: page.Next})
			if page.Next == "" {
				break
			}
			after = page.Next
		}
	}
	if out.err != nil || !c.Follow {
		return out.err
	}
	ctx, cancel := withTimeout(ctx, c.For)
	defer cancel()
	for {
		select {
		case <-ctx.Done():
			return out.err // the time asked for is over, or interrupted: done
		case u := <-updates:
			out.write(presenceLine{Channel: u.Channel, Online: u.Online, Snapshot: u.Snapshot,
				Joined: u.Joined, Left: u.Left, JoinedCount: u.JoinedCount, LeftCount: u.LeftCount})
			if out.err != nil {
				return out.err
			}
		}
	}
}

func (c *presenceCmd) refused(err error) error {
	var pe *stream.Error
	if errors.As(err, &pe) {
		return fmt.Errorf("the server refused the presence of %s: %s: %s", c.Channel, pe.Code, pe.Message)
	}
	return fmt.Errorf("presence of %s: %w", c.Channel, err)
}
