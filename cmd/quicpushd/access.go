package main

import (
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"

	"github.com/quicpush/quicpush/auth"
	"github.com/quicpush/quicpush/httpapi"
)

// access is who may do what: clients by their tokens, backends by the API
// key.
type access struct {
	auth     auth.Config    // for the log; its LogValue hides the key
	verifier *auth.Verifier // nil: dev mode
	apiKey   []byte         // nil: the HTTP API is off
}

// loadAccess reads the key files named by the flags.
func loadAccess(f flags) (access, error) {
	var a access
	var err error
	switch {
	case f.JWTSecretFile != "":
		if a.auth.Secret, err = auth.LoadSecret(f.JWTSecretFile); err != nil {
			return a, fmt.Errorf("--jwt-secret-file: %w", err)
		}
	case f.JWTPublicKey != "":
		if a.auth.PublicKey, err = auth.LoadPublicKey(f.JWTPublicKey); err != nil {
			return a, fmt.Errorf("--jwt-public-key: %w", err)
		}
	}
	if a.auth.Secret != nil || a.auth.PublicKey != nil {
		a.auth.RoomPublisherRoles = f.RoomPublisherRoles
		if a.verifier, err = auth.New(a.auth); err != nil {
			return a, err
		}
	}
	if f.APIKeyFile != "" {
		if a.apiKey, err = httpapi.LoadAPIKey(f.APIKeyFile); err != nil {
			return a, fmt.Errorf("--api-key-file: %w", err)
		}
	}
	return a, nil
}

// logMode says loudly when any client is accepted.
func (a access) logMode(log *slog.Logger) {
	if a.verifier == nil {
		log.Warn("DEV MODE: no --jwt-secret-file/--jwt-public-key: any client is accepted, and its token is taken as its user name")
		return
	}
	log.Info("clients need a signed token", "auth", a.auth)
}

// apiSlot serves /v1/: the HTTP API once the server runs, 503 until then
// (the admin listener serves while the store opens), and a 404 that says
// how to turn it on when it is off.
type apiSlot struct {
	on bool
	h  atomic.Value // http.Handler
}

func (s *apiSlot) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h, _ := s.h.Load().(http.Handler)
	switch {
	case !s.on:
		httpapi.Error(w, http.StatusNotFound, "not_found", "the HTTP API is off: start quicpushd with --api-key-file FILE")
	case h == nil:
		httpapi.Error(w, http.StatusServiceUnavailable, "unavailable", "quicpushd is starting: try again shortly")
	default:
		h.ServeHTTP(w, r)
	}
}
