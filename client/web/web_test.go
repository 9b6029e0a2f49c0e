package web

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestHandler(t *testing.T) {
	calls := 0
	h := Handler(func() PageConfig {
		calls++
		return PageConfig{URL: "https://127.0.0.1:4433/wt/v1", CertHashes: []string{strings.Repeat("A", calls)}}
	})
	srv := httptest.NewServer(h)
	defer srv.Close()

	get := func(path string) (*http.Response, string) {
		t.Helper()
		res, err := http.Get(srv.URL + path)
		require.NoError(t, err)
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		return res, string(b)
	}

	res, body := get("/sdk/quicpush.js")
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.Contains(t, res.Header.Get("Content-Type"), "javascript", "module scripts need a JavaScript type")
	require.True(t, strings.Contains(body, "new WebTransport("), "the SDK bundle")

	for _, page := range []string{"/demo/", "/demo/teacher.html", "/demo/student.html", "/demo/common.js", "/demo/demo.css"} {
		res, _ := get(page)
		require.Equal(t, http.StatusOK, res.StatusCode, page)
	}

	// The config is asked for on every request: the hashes rotate.
	for i := 1; i <= 2; i++ {
		res, body := get("/demo/config.json")
		require.Equal(t, "no-store", res.Header.Get("Cache-Control"))
		var cfg PageConfig
		require.NoError(t, json.Unmarshal([]byte(body), &cfg))
		require.Equal(t, PageConfig{URL: "https://127.0.0.1:4433/wt/v1", CertHashes: []string{strings.Repeat("A", i)}}, cfg)
	}

	res, _ = get("/sdk/missing.js")
	require.Equal(t, http.StatusNotFound, res.StatusCode)
	res, err := http.Post(srv.URL+"/demo/config.json", "application/json", nil)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusMethodNotAllowed, res.StatusCode)
}
