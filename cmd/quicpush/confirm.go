package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/quicpush/quicpush/client"
)

// confirmLine is a line about a message's confirmation.
type confirmLine struct {
	Channel     string   `json:"channel"`
	Seq         uint64   `json:"seq"`
	Confirmed   int      `json:"confirmed"`
	Total       int      `json:"total"`
	State       string   `json:"state"` // progress, complete, deadline, ended, lost
	Missing     []string `json:"missing,omitempty"`
	MissingMore int      `json:"missing_more,omitempty"`
}

// lineWriter prints pub's lines in order: a message's confirmation lines
// come from the session's reader and may be ready before its
// acknowledgement line is printed; they wait for it.
type lineWriter struct {
	w io.Writer

	mu      sync.Mutex
	printed map[uint64]bool          // seqs whose ack line is out
	waiting map[uint64][]confirmLine // their confirmation lines until then
	stopped bool                     // the command is done: no more lines
	err     error
}

// stop ends the output, before the client closes (which would report the
// confirmations still tracked as lost).
func (lw *lineWriter) stop() {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	lw.stopped = true
}

func (lw *lineWriter) acked(l pubLine) error {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	lw.write(l)
	if lw.printed == nil {
		lw.printed, lw.waiting = map[uint64]bool{}, map[uint64][]confirmLine{}
	}
	lw.printed[l.Seq] = true
	for _, w := range lw.waiting[l.Seq] {
		lw.write(w)
	}
	delete(lw.waiting, l.Seq)
	return lw.err
}

// confirmUpdate is ConfirmOptions.OnUpdate: it never blocks for long.
func (lw *lineWriter) confirmUpdate(st client.ConfirmStatus) {
	l := confirmLine{Channel: st.Channel, Seq: st.Seq, Confirmed: st.Confirmed, Total: st.Total, State: confirmState(st)}
	if l.State == "deadline" || l.State == "ended" {
		l.Missing, l.MissingMore = st.Missing, st.MissingMore
	}
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if lw.stopped {
		return
	}
	if !lw.printed[st.Seq] {
		if lw.waiting == nil {
			lw.printed, lw.waiting = map[uint64]bool{}, map[uint64][]confirmLine{}
		}
		lw.waiting[st.Seq] = append(lw.waiting[st.Seq], l)
		return
	}
	lw.write(l)
}

func (lw *lineWriter) write(v any) {
	if err := writeLine(lw.w, v); err != nil && lw.err == nil {
		lw.err = fmt.Errorf("cannot write to stdout: %w", err)
	}
}

func confirmState(st client.ConfirmStatus) string {
	switch {
	case st.Lost:
		return "lost"
	case st.Complete() && st.Final:
		return "complete"
	case st.Final:
		return "ended"
	case st.Report:
		return "deadline"
	}
	return "progress"
}

// waitConfirmations waits for every message's deadline report (or its
// completion) and fails unless every recipient confirmed in time.
func waitConfirmations(ctx context.Context, confirms []*client.Confirmation, wait time.Duration) error {
	var short []string
	for _, c := range confirms {
		st, err := c.Report(ctx)
		if err != nil {
			return fmt.Errorf("interrupted while waiting for the confirmations of seq %d (%d of %d so far)", st.Seq, st.Confirmed, st.Total)
		}
		switch {
		case st.Lost:
			short = append(short, fmt.Sprintf("seq %d: the connection broke at %d of %d (run the same command with --id again to track it again)", st.Seq, st.Confirmed, st.Total))
		case !st.Complete():
			names := strings.Join(st.Missing, ", ")
			if st.MissingMore > 0 {
				names += fmt.Sprintf(" and %d more", st.MissingMore)
			}
			short = append(short, fmt.Sprintf("seq %d: %d of %d confirmed, missing %s", st.Seq, st.Confirmed, st.Total, names))
		}
	}
	if len(short) > 0 {
		return errors.New("not all recipients confirmed within " + wait.String() + ": " + strings.Join(short, "; "))
	}
	return nil
}
