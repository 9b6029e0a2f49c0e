package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/quicpush/quicpush/client"
	"github.com/quicpush/quicpush/stream"
)

type sendCmd struct {
	User    string        `arg:"" help:"The user to send to (the recipient's inbox is user/USER/inbox)."`
	Data    string        `required:"" env:"QUICPUSH_SEND_DATA" placeholder:"TEXT" help:"The message text."`
	ID      string        `name:"id" env:"QUICPUSH_SEND_ID" placeholder:"ID" help:"Client message id: sending again with the same id stores nothing twice; default: a random one (printed)."`
	Wait    string        `default:"delivered" enum:"none,delivered,read" env:"QUICPUSH_SEND_WAIT" help:"After the acknowledgement, wait for the receipt: none, delivered or read (default: ${default})."`
	Timeout time.Duration `env:"QUICPUSH_SEND_TIMEOUT" placeholder:"D" help:"Give up after D (e.g. 10s) and exit 1; default: wait as long as it takes."`
}

// Help explains the output, below the flags of "quicpush send --help".
func (sendCmd) Help() string {
	return `Sends one chat message and prints the server's acknowledgement:
  {"to","channel","seq","epoch","id","duplicate"}
(seq is the message's seq in the recipient's inbox), then each receipt as it
comes back through your own inbox:
  {"receipt":"delivered"|"read","peer","id","peer_seq","peer_epoch","seq"}
Exits 0 once the receipt --wait asks for has arrived, 1 on --timeout.
Your inbox is followed without acknowledging anything: what waits there for
"quicpush inbox" stays unread.`
}

func (c *sendCmd) Validate() error {
	if c.User == "" {
		return nil // kong reports the missing argument
	}
	if err := stream.ValidateChatUser(c.User); err != nil {
		return plain(err)
	}
	if c.ID != "" {
		if err := stream.ValidateChatID(c.ID); err != nil {
			return fmt.Errorf("--id: %v", plain(err))
		}
	}
	if n := len(c.Data); n > stream.MaxChatSize {
		return fmt.Errorf("--data: a message of %d bytes exceeds the limit of %d", n, stream.MaxChatSize)
	}
	return nil
}

type sendLine struct {
	To        string `json:"to"`
	Channel   string `json:"channel"`
	Seq       uint64 `json:"seq"`
	Epoch     uint64 `json:"epoch"`
	ID        string `json:"id"`
	Duplicate bool   `json:"duplicate"`
}

type receiptLine struct {
	Receipt   string `json:"receipt"`
	Peer      string `json:"peer"`
	ID        string `json:"id"`
	PeerSeq   uint64 `json:"peer_seq"`
	PeerEpoch uint64 `json:"peer_epoch"`
	Seq       uint64 `json:"seq"`
}

func (c *sendCmd) Run(ctx context.Context, e *env) error {
	ctx, cancel := withTimeout(ctx, c.Timeout)
	defer cancel()
	cl, err := e.dial(ctx, nil, c.Timeout, nil)
	if err != nil {
		return err
	}
	defer cl.Close()
	id := c.ID
	if id == "" {
		id = randomID()
	}
	// Follow the receipts from now on: subscribe after the inbox's current
	// head before sending, so none can slip by.
	receipts := make(chan client.Receipt, 4)
	var once sync.Once
	gone := make(chan error, 1)
	if c.Wait != "none" {
		head, err := ownInboxHead(ctx, cl)
		if err != nil {
			return err
		}
		_, err = cl.Inbox(ctx, client.InboxOptions{
			Since: &head, Observe: true,
			OnMessage: func(client.ChatMessage) error { return nil },
			OnReceipt: func(r client.Receipt) error {
				if r.Peer == c.User && r.ID == id {
					select {
					case receipts <- r:
					case <-ctx.Done():
					}
				}
				return nil
			},
			OnError: func(err error) { once.Do(func() { gone <- err }) },
		})
		if err != nil {
			return fmt.Errorf("cannot follow your inbox for receipts: %w", err)
		}
	}
	res, err := cl.Send(ctx, c.User, []byte(c.Data), client.SendOptions{ID: id})
	var pe *stream.Error
	switch {
	case errors.As(err, &pe):
		return fmt.Errorf("the server refused the message: %s: %s", pe.Code, pe.Message)
	case ctx.Err() != nil:
		return fmt.Errorf("%s before the message was acknowledged; it may or may not be stored: send again with --id %s", stopReason(ctx, c.Timeout), id)
	case err != nil:
		return fmt.Errorf("sending failed: %w", err)
	}
	if err := writeLine(e.stdout, sendLine{To: c.User, Channel: res.Channel, Seq: res.Seq, Epoch: res.Epoch, ID: res.ID, Duplicate: res.Duplicate}); err != nil {
		return fmt.Errorf("cannot write to stdout: %w", err)
	}
	if c.Wait == "none" {
		return nil
	}
	for {
		select {
		case r := <-receipts:
			if err := writeLine(e.stdout, receiptLine{Receipt: r.Kind.String(), Peer: r.Peer, ID: r.ID, PeerSeq: r.PeerSeq, PeerEpoch: r.PeerEpoch, Seq: r.Seq}); err != nil {
				return fmt.Errorf("cannot write to stdout: %w", err)
			}
			if r.Kind.String() == c.Wait {
				return nil
			}
		case err := <-gone:
			return fmt.Errorf("following your inbox failed: %w", err)
		case <-ctx.Done():
			return fmt.Errorf("%s: no %s receipt yet (the message is stored: %s gets it when they connect)", stopReason(ctx, c.Timeout), c.Wait, c.User)
		}
	}
}

// ownInboxHead returns the last seq of the user's inbox.
func ownInboxHead(ctx context.Context, cl *client.Client) (uint64, error) {
	user, err := cl.User(ctx)
	if err != nil {
		return 0, err
	}
	w, err := cl.Waiting(ctx, stream.InboxChannel(user))
	if err == nil && w[0].Err != nil {
		err = w[0].Err
	}
	if err != nil {
		return 0, fmt.Errorf("cannot read your inbox: %w", err)
	}
	return w[0].Head, nil
}

func stopReason(ctx context.Context, timeout time.Duration) string {
	if errors.Is(ctx.Err(), context.Canceled) {
		return "interrupted"
	}
	return fmt.Sprintf("timed out after %v", timeout)
}

func randomID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
