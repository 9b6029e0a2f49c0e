package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/internal/bench"
)

// TestMain doubles as bench's server child: bench starts this binary (the
// test binary, here) with "... bench-server KIND".
func TestMain(m *testing.M) {
	if slices.Contains(os.Args, "bench-server") {
		os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func TestBench(t *testing.T) {
	out := filepath.Join(t.TempDir(), "bench.json")
	var stdout, stderr syncBuffer
	code := run(t.Context(), []string{"bench", "fanout", "--subscribers", "2,3", "--messages", "20",
		"--duration", "2s", "--warmup", "0", "--out", out}, &stdout, &stderr)
	require.Equal(t, 0, code, stderr.String())

	res := lines[bench.Result](t, stdout.String())
	require.Len(t, res, 2)
	for i, n := range []int{2, 3} {
		require.Equal(t, "fanout", res[i].Scenario)
		require.Equal(t, n, res[i].Subscribers)
		require.EqualValues(t, 20*n, res[i].Quicpush.Deliveries)
		require.EqualValues(t, 20*n, res[i].Raw.Deliveries)
		require.Contains(t, res[i].Ratio, "deliveries_per_s")
	}
	require.Contains(t, stderr.String(), "SCENARIO  SETUP")
	require.Contains(t, stderr.String(), "2 subs, window 16, 100 B")

	var file struct {
		CPUs    int            `json:"cpus"`
		Results []bench.Result `json:"results"`
	}
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &file))
	require.Positive(t, file.CPUs)
	require.Equal(t, res, file.Results)
}

func TestBenchUsage(t *testing.T) {
	for _, args := range [][]string{
		{"bench"},
		{"bench", "nope"},
		{"bench", "fanout", "--scenario", "idle"},
		{"bench", "fanout", "--subscribers", "0"},
		{"bench", "fanout", "--size", "8"},
		{"bench", "latency", "--rate", "-1"},
	} {
		var stdout, stderr syncBuffer
		code := run(t.Context(), args, &stdout, &stderr)
		require.Equal(t, 2, code, "%v: %s", args, stderr.String())
		require.Contains(t, stderr.String(), "quicpush bench --help", args)
		require.Empty(t, stdout.String(), args)
	}
	var stdout, stderr syncBuffer
	require.Equal(t, 0, run(t.Context(), []string{"bench", "--help"}, &stdout, &stderr))
	require.Contains(t, stdout.String(), "raw quic-go")
}
