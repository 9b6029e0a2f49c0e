package store

import (
	"context"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"
)

// recorder keeps the records it handles.
type recorder struct{ records []slog.Record }

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.records = append(r.records, rec)
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

func TestBadgerLogger(t *testing.T) {
	rec := &recorder{}
	l := badgerLogger{slog.New(rec)}
	l.Errorf("e %d\n", 1)
	l.Warningf("w %d\n", 2)
	l.Infof("i %d\n", 3)
	l.Debugf("d %d\n", 4)
	var got []string
	for _, r := range rec.records {
		got = append(got, r.Level.String()+" "+r.Message)
	}
	require.Equal(t, []string{"ERROR e 1", "WARN w 2", "DEBUG i 3", "DEBUG d 4"}, got,
		"Badger's Info is chatty: it goes to Debug")
}
