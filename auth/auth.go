package auth

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/quicpush/quicpush/server"
)

// Errors of a Verifier. Every refusal wraps one of them; its text says what
// is wrong and never contains the token.
var (
	ErrInvalidToken = errors.New("auth: invalid token")
	ErrForbidden    = errors.New("auth: forbidden")
)

// refusal is an error whose text is exactly what went wrong.
type refusal struct {
	msg  string
	kind error
}

func (r *refusal) Error() string { return r.msg }
func (r *refusal) Unwrap() error { return r.kind }

func refuse(kind error, format string, args ...any) error {
	return &refusal{msg: fmt.Sprintf(format, args...), kind: kind}
}

// RoomPattern names the channels whose reliable messages only
// Config.RoomPublisherRoles may publish.
const RoomPattern = "room/**"

// Config configures a Verifier. Exactly one of Secret and PublicKey is set.
type Config struct {
	// Secret verifies HS256 tokens; at least 32 bytes (see LoadSecret).
	Secret []byte
	// PublicKey verifies EdDSA (ed25519.PublicKey) or RS256 (*rsa.PublicKey,
	// at least 2048 bits) tokens (see LoadPublicKey).
	PublicKey crypto.PublicKey
	// RoomPublisherRoles are the roles (the token's "role") that may publish
	// reliable messages to channels matching RoomPattern: teachers send the
	// commands a classroom must not miss, students only droppable ones.
	// Nil: "teacher" and "admin"; empty: nobody.
	RoomPublisherRoles []string
	// Leeway tolerates an issuer's clock running ahead of this server's when
	// checking nbf and iat. exp gets none: the server closes the connection
	// at exp. Zero: 30 s; negative: none.
	Leeway time.Duration
}

// LogValue keeps the key out of logs.
func (c Config) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("algorithm", algorithm(c))}
	if c.Secret != nil {
		attrs = append(attrs, slog.String("secret", "[redacted]"))
	}
	if c.RoomPublisherRoles != nil {
		attrs = append(attrs, slog.Any("room_publisher_roles", c.RoomPublisherRoles))
	}
	return slog.GroupValue(attrs...)
}

// algorithm is the JWT algorithm of c's key, "" if none fits.
func algorithm(c Config) string {
	switch c.PublicKey.(type) {
	case nil:
		if c.Secret != nil {
			return jwt.SigningMethodHS256.Alg()
		}
	case ed25519.PublicKey:
		return jwt.SigningMethodEdDSA.Alg()
	case *rsa.PublicKey:
		return jwt.SigningMethodRS256.Alg()
	}
	return ""
}

// Verifier checks tokens (server.Config.Authenticate) and what their claims
// allow (server.Config.Authorize). It is safe for concurrent use.
type Verifier struct {
	alg    string
	key    any
	roles  []string
	leeway time.Duration
	parser *jwt.Parser
}

// New returns a Verifier for cfg.
func New(cfg Config) (*Verifier, error) {
	if (cfg.Secret == nil) == (cfg.PublicKey == nil) {
		return nil, errors.New("auth: set exactly one of Config.Secret and Config.PublicKey")
	}
	v := &Verifier{alg: algorithm(cfg), roles: cfg.RoomPublisherRoles, leeway: cfg.Leeway}
	if cfg.Secret != nil {
		if err := checkSecret(cfg.Secret); err != nil {
			return nil, fmt.Errorf("auth: %w", err)
		}
		v.key = slices.Clone(cfg.Secret)
	} else {
		if err := checkKey(cfg.PublicKey); err != nil {
			return nil, fmt.Errorf("auth: %w", err)
		}
		v.key = cfg.PublicKey
	}
	if v.roles == nil {
		v.roles = []string{"teacher", "admin"}
	}
	v.roles = slices.Clone(v.roles)
	switch {
	case v.leeway == 0:
		v.leeway = 30 * time.Second
	case v.leeway < 0:
		v.leeway = 0
	}
	// Claims are checked by Verify, with messages that say exactly what is
	// wrong and without leeway on exp.
	v.parser = jwt.NewParser(jwt.WithValidMethods([]string{v.alg}), jwt.WithoutClaimsValidation())
	return v, nil
}

// Algorithm is the JWT algorithm the Verifier accepts: HS256, EdDSA or RS256.
func (v *Verifier) Algorithm() string { return v.alg }

// Verify checks token's signature and claims at time now.
func (v *Verifier) Verify(token string, now time.Time) (*Claims, error) {
	if token == "" {
		return nil, refuse(ErrInvalidToken, "no token: this server accepts only clients with a signed token (%s)", v.alg)
	}
	var w wireClaims
	t, err := v.parser.ParseWithClaims(token, &w, func(*jwt.Token) (any, error) { return v.key, nil })
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return nil, refuse(ErrInvalidToken, "%v", err) // jwt's text starts with "token is malformed"
	case err != nil && t != nil && t.Header["alg"] != v.alg:
		return nil, refuse(ErrInvalidToken, "token algorithm %q is not accepted: this server verifies %s tokens", t.Header["alg"], v.alg)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return nil, refuse(ErrInvalidToken, "signature invalid: the token was not signed with this server's key")
	case err != nil:
		return nil, refuse(ErrInvalidToken, "token not verified: %v", err)
	}
	c := w.claims()
	if err := c.check(); err != nil {
		return nil, refuse(ErrInvalidToken, "%v", err)
	}
	switch {
	case !now.Before(c.ExpiresAt):
		return nil, refuse(ErrInvalidToken, "token expired at %s", stamp(c.ExpiresAt))
	case !c.NotBefore.IsZero() && now.Add(v.leeway).Before(c.NotBefore):
		return nil, refuse(ErrInvalidToken, "token not valid before %s", stamp(c.NotBefore))
	case !c.IssuedAt.IsZero() && now.Add(v.leeway).Before(c.IssuedAt):
		return nil, refuse(ErrInvalidToken, "token issued in the future (iat %s): check the issuer's clock", stamp(c.IssuedAt))
	}
	return c, nil
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// Authenticate is a server.Config.Authenticate hook: the user is the
// token's sub, the connection ends at its exp unless refreshed, and its
// claims go to Authorize.
func (v *Verifier) Authenticate(_ context.Context, ev server.HelloEvent) (server.HelloReply, error) {
	c, err := v.Verify(ev.Token, time.Now())
	if err != nil {
		return server.HelloReply{}, err
	}
	return server.HelloReply{User: c.Subject, Claims: c, ExpiresAt: c.ExpiresAt}, nil
}

// Authorize is a server.Config.Authorize hook: the channel must match one of
// the token's subscribe (or publish) patterns, and a reliable publish to a
// channel matching RoomPattern needs one of the room publisher roles.
func (v *Verifier) Authorize(_ context.Context, ev server.AuthorizeEvent) error {
	c, ok := ev.Claims.(*Claims)
	if !ok {
		return refuse(ErrForbidden, "the connection has no claims from this verifier (is it the server's Authenticate hook too?)")
	}
	patterns := c.Subscribe
	if ev.Action == server.ActionPublish || ev.Action == server.ActionChat {
		// A chat message to B is allowed by a publish pattern matching B's
		// inbox "user/B/inbox" (e.g. "user/*/inbox": anyone).
		patterns = c.Publish
	}
	if !matchAny(patterns, c.Subject, ev.Channel) {
		return refuse(ErrForbidden, "channel %s is not in the token's %s patterns", ev.Channel, ev.Action)
	}
	if ev.Action == server.ActionPublish && !ev.Droppable && Match(RoomPattern, "", ev.Channel) && !slices.Contains(v.roles, c.Role) {
		who := fmt.Sprintf("role %q", c.Role)
		if c.Role == "" {
			who = "a token without a role"
		}
		allowed := strings.Join(v.roles, ", ")
		if allowed == "" {
			allowed = "none"
		}
		return refuse(ErrForbidden, "%s may not publish reliable messages to %s (roles allowed: %s)", who, ev.Channel, allowed)
	}
	return nil
}
