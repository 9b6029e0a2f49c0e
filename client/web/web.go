// Package web embeds the quicpush browser SDK (dist/, built from src/ by
// `npm --prefix client/web run build`) and the demo classroom pages (demo/),
// and serves them over plain HTTP.
package web

import (
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
)

//go:embed dist demo
var files embed.FS

// PageConfig is what a page needs to reach the server over WebTransport.
type PageConfig struct {
	// URL of the WebTransport endpoint, e.g. "https://127.0.0.1:4433/wt/v1".
	URL string `json:"url"`
	// CertHashes are the base64 SHA-256 hashes of the DER certificates the
	// browser may accept through serverCertificateHashes (self-signed, short
	// lived); empty when the server has a publicly trusted certificate.
	CertHashes []string `json:"certHashes"`
}

// Handler serves the SDK bundle under /sdk/ (/sdk/quicpush.js), the demo
// pages under /demo/, and GET /demo/config.json from config, which is called
// on every request (the certificate hashes rotate). Mount it for both
// prefixes, e.g. mux.Handle("/sdk/", h) and mux.Handle("/demo/", h).
func Handler(config func() PageConfig) http.Handler {
	dist, _ := fs.Sub(files, "dist")
	demo, _ := fs.Sub(files, "demo")
	mux := http.NewServeMux()
	mux.Handle("GET /sdk/", noCache(http.StripPrefix("/sdk/", http.FileServerFS(dist))))
	mux.HandleFunc("GET /demo/config.json", func(w http.ResponseWriter, r *http.Request) {
		cfg := config()
		if cfg.CertHashes == nil {
			cfg.CertHashes = []string{}
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		json.NewEncoder(w).Encode(cfg)
	})
	mux.Handle("GET /demo/", noCache(http.StripPrefix("/demo/", http.FileServerFS(demo))))
	mux.Handle("GET /demo", http.RedirectHandler("/demo/", http.StatusMovedPermanently))
	return mux
}

// noCache makes browsers revalidate, so a rebuilt bundle is picked up at
// once (the files are small and served from memory).
func noCache(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		h.ServeHTTP(w, r)
	})
}
