package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/certs"
	"github.com/quicpush/quicpush/client"
	"github.com/quicpush/quicpush/server"
	"github.com/quicpush/quicpush/store/memstore"
)

// /metrics on the admin listener serves the server's metrics with Go's and
// the process's.
func TestMetricsEndpoint(t *testing.T) {
	dir := t.TempDir()
	listen, admin := freeUDP(t), freeTCP(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	p := runDaemon(ctx, "--listen", listen, "--admin", admin, "--data", dir)
	waitReady(t, admin, p.exited, p.stderr)

	pool, err := certs.CAPool(filepath.Join(dir, "certs", "ca.pem"))
	require.NoError(t, err)
	dctx, dcancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer dcancel()
	c, err := client.Dial(dctx, listen, client.Config{TLSConfig: &tls.Config{RootCAs: pool}})
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Session("s").Publish(dctx, "room/m", []byte("m"), client.PublishOptions{})
	require.NoError(t, err)

	resp, err := http.Get("http://" + admin + "/metrics")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, resp.Header.Get("Content-Type"), "text/plain")
	for _, want := range []string{
		"\nquicpush_connections 1\n",
		"\nquicpush_connections_accepted_total 1\n",
		"\n" + `quicpush_publishes_total{class="reliable",outcome="stored"} 1` + "\n",
		"\n" + `quicpush_store_append_batch_size_bucket{le="1"} 1` + "\n",
		"# HELP quicpush_push_latency_seconds ",
		"\ngo_goroutines ",
		"\nprocess_resident_memory_bytes ",
	} {
		require.Contains(t, string(body), want)
	}

	require.NoError(t, c.Close())
	cancel()
	require.Equal(t, 0, p.wait(t), p.stderr.String())
}

// The Grafana dashboard is valid JSON whose queries name only metrics that
// quicpushd serves, and it shows every quicpush metric.
func TestGrafanaDashboard(t *testing.T) {
	reg := newRegistry()
	srv, err := server.New(server.Config{Store: memstore.New(memstore.Options{}), TLSConfig: &tls.Config{},
		Logger: slog.New(slog.DiscardHandler), Registerer: reg})
	require.NoError(t, err)
	defer srv.Close()
	families, err := reg.Gather()
	require.NoError(t, err)
	served := map[string]string{} // series name -> its family
	for _, f := range families {
		served[f.GetName()] = f.GetName()
		if f.GetType() == dto.MetricType_HISTOGRAM {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				served[f.GetName()+suffix] = f.GetName()
			}
		}
	}

	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "grafana", "quicpush.json"))
	require.NoError(t, err)
	var dashboard any
	require.NoError(t, json.Unmarshal(b, &dashboard))
	var exprs []string
	collectExprs(dashboard, &exprs)
	require.NotEmpty(t, exprs)
	shown := map[string]bool{}
	for _, expr := range exprs {
		names := metricNames(expr)
		require.NotEmpty(t, names, "expr %q names no metric", expr)
		for _, name := range names {
			family, ok := served[name]
			require.True(t, ok, "expr %q: quicpushd serves no metric %s", expr, name)
			shown[family] = true
		}
	}
	for _, f := range families {
		if strings.HasPrefix(f.GetName(), "quicpush_") {
			require.True(t, shown[f.GetName()], "no panel shows %s", f.GetName())
		}
	}
}

func TestMetricNames(t *testing.T) {
	require.Equal(t, []string{"a_bucket", "b_total", "c"}, metricNames(
		`histogram_quantile(0.99, sum by (le, class) (rate(a_bucket{job=~"$job",x="y{z}"}[$__rate_interval])))`+
			` / ignoring (code) sum without (code) (b_total offset 1h) > bool 1e3 and on (le) c`))
}

// collectExprs appends the "expr" strings found anywhere in v.
func collectExprs(v any, exprs *[]string) {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if s, ok := e.(string); ok && k == "expr" {
				*exprs = append(*exprs, s)
			}
			collectExprs(e, exprs)
		}
	case []any:
		for _, e := range v {
			collectExprs(e, exprs)
		}
	}
}

var (
	promStrings  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	promMatchers = regexp.MustCompile(`\{[^}]*\}|\[[^\]]*\]`)
	promGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promIdent    = regexp.MustCompile(`[a-zA-Z_:][\w:]*`)
	promKeywords = []string{"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right", "inf", "nan"}
)

// metricNames returns the metric names a PromQL expression selects, in
// order, once each: what is left once strings, label matchers, ranges,
// grouping clauses, function calls, numbers and keywords are taken out.
func metricNames(expr string) []string {
	expr = promStrings.ReplaceAllString(expr, `""`)
	expr = promMatchers.ReplaceAllString(expr, " ")
	expr = promGrouping.ReplaceAllString(expr, " ")
	var names []string
	for _, loc := range promIdent.FindAllStringIndex(expr, -1) {
		name := expr[loc[0]:loc[1]]
		inNumber := loc[0] > 0 && strings.ContainsAny(expr[loc[0]-1:loc[0]], "0123456789.$")
		call := strings.HasPrefix(strings.TrimLeft(expr[loc[1]:], " \t\n"), "(")
		if inNumber || call || slices.Contains(promKeywords, strings.ToLower(name)) || slices.Contains(names, name) {
			continue
		}
		names = append(names, name)
	}
	return names
}
