package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/quicpush/quicpush/client"
	"github.com/quicpush/quicpush/stream"
)

type inboxCmd struct {
	NewestFirst bool          `env:"QUICPUSH_INBOX_NEWEST_FIRST" help:"Before the catch-up, print the newest page (lines with \"preview\":true): show what is recent, back-fill the rest."`
	Follow      bool          `env:"QUICPUSH_INBOX_FOLLOW" help:"Keep printing what arrives after the catch-up, until interrupted."`
	MarkRead    bool          `env:"QUICPUSH_INBOX_MARK_READ" help:"Mark every message printed as read (the sender gets a read receipt)."`
	State       string        `type:"path" env:"QUICPUSH_INBOX_STATE" placeholder:"FILE" help:"Persist the handled position in FILE, so that the next run goes on right after it (default: after your acknowledged cursor)."`
	Timeout     time.Duration `env:"QUICPUSH_INBOX_TIMEOUT" placeholder:"D" help:"Give up after D and exit 1 if the catch-up is not done (with --follow: stop and exit 0)."`
}

// Help explains the output, below the flags of "quicpush inbox --help".
func (inboxCmd) Help() string {
	return `Reads your inbox (user/YOU/inbox). First one line with the count:
  {"channel","waiting","head","acked","page_size"}
then the records, pulled in pages of page_size, oldest first, each once:
  {"kind":"message","from","to","id","data","seq","epoch","time"}
  {"kind":"sent","from","to","id","data","seq","epoch","time"}   (sent from any of your devices)
  {"kind":"delivered"|"read","peer","id","peer_seq","peer_epoch","seq","epoch","time"}
Handled records are acknowledged: their senders get a "delivered" receipt.
Exits 0 once caught up with what waited (unless --follow).`
}

type countLine struct {
	Channel  string `json:"channel"`
	Waiting  uint64 `json:"waiting"`
	Head     uint64 `json:"head"`
	Acked    uint64 `json:"acked"`
	PageSize int    `json:"page_size"`
}

type recordLine struct {
	Kind      string    `json:"kind"`
	Preview   bool      `json:"preview,omitempty"`
	From      string    `json:"from,omitempty"`
	To        string    `json:"to,omitempty"`
	Peer      string    `json:"peer,omitempty"`
	ID        string    `json:"id"`
	Data      *string   `json:"data,omitempty"`
	PeerSeq   uint64    `json:"peer_seq,omitempty"`
	PeerEpoch uint64    `json:"peer_epoch,omitempty"`
	Seq       uint64    `json:"seq"`
	Epoch     uint64    `json:"epoch"`
	Time      time.Time `json:"time"`
}

func entryLine(e client.InboxEntry) recordLine {
	chat := func(kind string, m *client.ChatMessage) recordLine {
		data := string(m.Data)
		return recordLine{Kind: kind, From: m.From, To: m.To, ID: m.ID, Data: &data, Seq: m.Seq, Epoch: m.Epoch, Time: m.Time}
	}
	switch {
	case e.Message != nil:
		return chat("message", e.Message)
	case e.Sent != nil:
		return chat("sent", e.Sent)
	default:
		r := e.Receipt
		return recordLine{Kind: r.Kind.String(), Peer: r.Peer, ID: r.ID, PeerSeq: r.PeerSeq, PeerEpoch: r.PeerEpoch, Seq: r.Seq, Epoch: r.Epoch, Time: r.Time}
	}
}

func (c *inboxCmd) Run(ctx context.Context, e *env) error {
	ctx, cancel := withTimeout(ctx, c.Timeout)
	defer cancel()
	state, err := openState(c.State)
	if err != nil {
		return err
	}
	cl, err := e.dial(ctx, state, c.Timeout, nil)
	if err != nil {
		return err
	}
	// Close sends the acknowledgements of what was handled.
	defer cl.Close()
	user, err := cl.User(ctx)
	if err != nil {
		return err
	}
	inbox := stream.InboxChannel(user)
	counts, err := cl.Waiting(ctx, inbox)
	if err == nil && counts[0].Err != nil {
		err = counts[0].Err
	}
	if err != nil {
		return fmt.Errorf("cannot count your inbox %s: %w", inbox, err)
	}
	w := counts[0]
	if err := writeLine(e.stdout, countLine{Channel: inbox, Waiting: w.Count, Head: w.Head, Acked: w.After, PageSize: w.PageSize}); err != nil {
		return err
	}
	if c.NewestFirst && w.Count > 0 {
		page, err := cl.Page(ctx, inbox, client.PageOptions{After: w.After, Newest: true})
		if err != nil {
			return fmt.Errorf("cannot read the newest page: %w", err)
		}
		for _, m := range page.Messages {
			if entry, err := client.DecodeInbox(user, m); err == nil {
				line := entryLine(entry)
				line.Preview = true
				if err := writeLine(e.stdout, line); err != nil {
					return err
				}
			}
		}
	}
	p := &inboxPrinter{w: e.stdout, done: make(chan struct{})}
	var toRead []client.ChatMessage
	handle := func(entry client.InboxEntry, seq uint64) error {
		// Queued before it is printed: printing the last one says the
		// catch-up is done, and the marking starts.
		if c.MarkRead && entry.Message != nil {
			p.mu.Lock()
			toRead = append(toRead, *entry.Message)
			p.mu.Unlock()
		}
		return p.print(entryLine(entry), seq)
	}
	ib, err := cl.Inbox(ctx, client.InboxOptions{
		OnWaiting: func(w client.Waiting) { p.target(w) },
		OnMessage: func(m client.ChatMessage) error { return handle(client.InboxEntry{Message: &m}, m.Seq) },
		OnSent:    func(m client.ChatMessage) error { return handle(client.InboxEntry{Sent: &m}, m.Seq) },
		OnReceipt: func(r client.Receipt) error { return handle(client.InboxEntry{Receipt: &r}, r.Seq) },
		OnError:   p.fail,
	})
	if err != nil {
		return fmt.Errorf("cannot subscribe to your inbox: %w", err)
	}
	if !c.Follow {
		select {
		case <-p.done:
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("timed out after %v before the catch-up was done", c.Timeout)
			}
			return errors.New("interrupted before the catch-up was done")
		}
	} else {
		<-ctx.Done()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return p.err
	}
	return markRead(context.WithoutCancel(ctx), cl, ib, toRead)
}

// markRead marks msgs read once the Inbox has finished handling them (the
// catch-up is known done from inside the last one's handler), and MarkRead
// sends the held-back acknowledgement of their delivery first.
func markRead(ctx context.Context, cl *client.Client, ib *client.Inbox, msgs []client.ChatMessage) error {
	if len(msgs) > 0 {
		wait, cancel := context.WithTimeout(ctx, 10*time.Second) // the handler returned: a moment
		defer cancel()
		if err := ib.WaitHandled(wait, msgs[len(msgs)-1]); err != nil {
			return fmt.Errorf("waiting for the messages to be handled: %w", err)
		}
	}
	for _, m := range msgs {
		if err := cl.MarkRead(ctx, m); err != nil {
			return fmt.Errorf("cannot mark %s's message %s read: %w", m.From, m.ID, err)
		}
	}
	return nil
}

// inboxPrinter prints records and says when the catch-up is done: the
// first count says up to which seq.
type inboxPrinter struct {
	w    io.Writer
	mu   sync.Mutex
	head uint64
	set  bool
	err  error
	done chan struct{}
	once sync.Once
}

func (p *inboxPrinter) target(w client.Waiting) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.set {
		return
	}
	p.set, p.head = true, w.Head
	if w.Count == 0 {
		p.once.Do(func() { close(p.done) })
	}
}

func (p *inboxPrinter) print(line recordLine, seq uint64) error {
	if err := writeLine(p.w, line); err != nil {
		return fmt.Errorf("cannot write to stdout: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.set && seq >= p.head {
		p.once.Do(func() { close(p.done) })
	}
	return nil
}

func (p *inboxPrinter) fail(err error) {
	p.mu.Lock()
	p.err = fmt.Errorf("the inbox stopped: %w", err)
	p.mu.Unlock()
	p.once.Do(func() { close(p.done) })
}
