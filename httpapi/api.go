package httpapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"

	"github.com/quicpush/quicpush/server"
	"github.com/quicpush/quicpush/store"
	"github.com/quicpush/quicpush/stream"
)

// Server is what the API needs from the quicpush server.
type Server interface {
	Publish(ctx context.Context, from string, reqs []server.PublishRequest) ([]store.AppendResult, error)
	History(ctx context.Context, channel string, from, to uint64, limit int) ([]store.Message, store.Bounds, error)
	ChannelInfo(ctx context.Context, channel string) (server.ChannelInfo, error)
	DisconnectUser(user string, code stream.ErrCode, reason string) int
}

var _ Server = (*server.Server)(nil)

// minKeyLen refuses API keys short enough to guess.
const minKeyLen = 16

// Config configures the API handler.
type Config struct {
	// Server serves the requests. Required.
	Server Server
	// APIKey is the bearer token every request must carry; at least 16
	// bytes (see LoadAPIKey). Required.
	APIKey []byte
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// LogValue keeps the key out of logs.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(slog.String("api_key", "[redacted]"))
}

// LoadAPIKey reads an API key from path: the file's bytes without trailing
// white space ("openssl rand -hex 32 > FILE" makes one). Errors name the
// file, never its content.
func LoadAPIKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	b = bytes.TrimRight(b, " \t\r\n")
	if len(b) < minKeyLen {
		return nil, fmt.Errorf("%s: an API key of %d bytes is too short: use at least %d (e.g. openssl rand -hex 32 > FILE)", path, len(b), minKeyLen)
	}
	return b, nil
}

// handler serves the API.
type handler struct {
	srv     Server
	keyHash [sha256.Size]byte
	log     *slog.Logger
	mux     *http.ServeMux
}

// New returns the API's handler, which serves the paths under /v1/.
func New(cfg Config) (http.Handler, error) {
	if cfg.Server == nil {
		return nil, errors.New("httpapi: Config.Server is required")
	}
	if len(cfg.APIKey) < minKeyLen {
		return nil, fmt.Errorf("httpapi: the API key must be at least %d bytes", minKeyLen)
	}
	h := &handler{srv: cfg.Server, keyHash: sha256.Sum256(cfg.APIKey), log: cfg.Logger, mux: http.NewServeMux()}
	if h.log == nil {
		h.log = slog.Default()
	}
	h.route("POST", "/v1/publish", h.publish)
	h.route("POST", "/v1/publish/batch", h.publishBatch)
	h.route("GET", "/v1/channels/{path...}", h.channel)
	h.route("POST", "/v1/users/{user}/disconnect", h.disconnect)
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h.fail(w, r, &apiError{http.StatusNotFound, "not_found", fmt.Sprintf("no route %s (see docs/API.md)", r.URL.Path)})
	})
	return h, nil
}

// route serves pattern for method, and answers other methods with 405
// (the catch-all 404 route would otherwise take them).
func (h *handler) route(method, pattern string, f http.HandlerFunc) {
	h.mux.HandleFunc(method+" "+pattern, f)
	allow := method
	if method == "GET" {
		allow = "GET, HEAD"
	}
	h.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		h.fail(w, r, &apiError{http.StatusMethodNotAllowed, "method_not_allowed", fmt.Sprintf("%s %s: use %s", r.Method, r.URL.Path, method)})
	})
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if e := h.authenticate(r); e != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="quicpush"`)
		h.fail(w, r, e)
		return
	}
	h.mux.ServeHTTP(w, r)
}

// authenticate checks the bearer key. Comparing hashes takes the same time
// whatever the key's length and content.
func (h *handler) authenticate(r *http.Request) *apiError {
	scheme, key, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return &apiError{http.StatusUnauthorized, "unauthorized", "missing Authorization: Bearer <API key> header"}
	}
	sum := sha256.Sum256([]byte(key))
	if subtle.ConstantTimeCompare(sum[:], h.keyHash[:]) != 1 {
		return &apiError{http.StatusUnauthorized, "unauthorized", "wrong API key"}
	}
	return nil
}

// apiError is an error answer: {"error":{"code","message"}}.
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.message }

func badRequest(format string, args ...any) *apiError {
	return &apiError{http.StatusBadRequest, "invalid_request", fmt.Sprintf(format, args...)}
}

// fail answers with err: an *apiError as it is, the server's and the
// store's errors by their kind.
func (h *handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	var e *apiError
	switch {
	case errors.As(err, &e):
	case errors.Is(err, server.ErrInvalid), errors.Is(err, store.ErrInvalid):
		e = badRequest("%s", plain(err))
	case errors.Is(err, store.ErrTooLarge):
		e = &apiError{http.StatusRequestEntityTooLarge, "too_large", err.Error()}
	case errors.Is(err, store.ErrUnavailable), errors.Is(err, store.ErrClosed), errors.Is(err, context.DeadlineExceeded):
		e = &apiError{http.StatusServiceUnavailable, "unavailable", "the store is unavailable, try again later: " + err.Error()}
	default:
		e = &apiError{http.StatusInternalServerError, "internal", err.Error()}
	}
	if e.status >= 500 {
		h.log.Error("HTTP API request failed", "method", r.Method, "path", r.URL.Path, "status", e.status, "err", err)
	} else {
		h.log.Debug("HTTP API request refused", "method", r.Method, "path", r.URL.Path, "status", e.status, "err", e.message)
	}
	Error(w, e.status, e.code, e.message)
}

// Error answers with status and the API's error body,
// {"error":{"code","message"}}, for handlers beside the API's (e.g. one
// that serves /v1/ while the API is off).
func Error(w http.ResponseWriter, status int, code, message string) {
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	body.Error.Code, body.Error.Message = code, message
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // JSON for programs, not for HTML pages: "<" stays "<"
	enc.Encode(v)            // the client may have gone: nothing to do
}

// decode reads one JSON object of at most limit bytes into v. An empty
// body leaves v as it is when allowEmpty.
func decode(w http.ResponseWriter, r *http.Request, limit int64, allowEmpty bool, v any) *apiError {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields() // a misspelt field is an error, not a default
	err := dec.Decode(v)
	if err == io.EOF && allowEmpty {
		return nil
	}
	if err == nil && dec.Decode(&json.RawMessage{}) != io.EOF {
		err = errors.New("more data after the JSON object")
	}
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return &apiError{http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("the request body is over %d bytes", limit)}
	case err == io.EOF:
		return &apiError{http.StatusBadRequest, "malformed_json", "the request body is empty: send a JSON object"}
	case err != nil:
		return &apiError{http.StatusBadRequest, "malformed_json", "the request body is not the expected JSON: " + err.Error()}
	}
	return nil
}

// plain drops the protocol wrapping ("quicpush: local error BAD_REQUEST:")
// from a validation error.
func plain(err error) string {
	var pe *stream.Error
	if errors.As(err, &pe) {
		return pe.Message
	}
	return err.Error()
}
