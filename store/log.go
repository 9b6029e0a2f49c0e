package store

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
)

// badgerLogger sends Badger's logs to slog. Badger's Info is chatty (every
// compaction, every memtable flush), so it goes to Debug.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, args ...any)   { b.log(slog.LevelError, f, args) }
func (b badgerLogger) Warningf(f string, args ...any) { b.log(slog.LevelWarn, f, args) }
func (b badgerLogger) Infof(f string, args ...any)    { b.log(slog.LevelDebug, f, args) }
func (b badgerLogger) Debugf(f string, args ...any)   { b.log(slog.LevelDebug, f, args) }

func (b badgerLogger) log(level slog.Level, f string, args []any) {
	ctx := context.Background()
	if !b.l.Enabled(ctx, level) {
		return
	}
	b.l.Log(ctx, level, strings.TrimSpace(fmt.Sprintf(f, args...)))
}
