package auth

import (
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/quicpush/quicpush/stream"
)

// Claims are what a quicpush token says. On the wire, times are whole
// seconds (NumericDate); finer parts are dropped.
type Claims struct {
	Subject   string    // "sub": the user, 1 to 128 bytes. Required.
	ExpiresAt time.Time // "exp": required; the connection ends then unless refreshed.
	NotBefore time.Time // "nbf": optional.
	IssuedAt  time.Time // "iat": optional.
	Subscribe []string  // "subscribe": patterns of the channels the user may subscribe to and read.
	Publish   []string  // "publish": patterns of the channels the user may publish to.
	Role      string    // "role": e.g. "teacher"; see Config.RoomPublisherRoles.
}

// wireClaims is the JSON form of Claims.
type wireClaims struct {
	jwt.RegisteredClaims
	Subscribe []string `json:"subscribe,omitempty"`
	Publish   []string `json:"publish,omitempty"`
	Role      string   `json:"role,omitempty"`
}

func (c Claims) wire() wireClaims {
	return wireClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   c.Subject,
			ExpiresAt: numericDate(c.ExpiresAt),
			NotBefore: numericDate(c.NotBefore),
			IssuedAt:  numericDate(c.IssuedAt),
		},
		Subscribe: c.Subscribe,
		Publish:   c.Publish,
		Role:      c.Role,
	}
}

func (w *wireClaims) claims() *Claims {
	return &Claims{
		Subject:   w.Subject,
		ExpiresAt: timeOf(w.ExpiresAt),
		NotBefore: timeOf(w.NotBefore),
		IssuedAt:  timeOf(w.IssuedAt),
		Subscribe: w.Subscribe,
		Publish:   w.Publish,
		Role:      w.Role,
	}
}

func numericDate(t time.Time) *jwt.NumericDate {
	if t.IsZero() {
		return nil
	}
	return jwt.NewNumericDate(t)
}

func timeOf(d *jwt.NumericDate) time.Time {
	if d == nil {
		return time.Time{}
	}
	return d.Time
}

// check reports what makes c unusable, whatever the time.
func (c *Claims) check() error {
	if c.Subject == "" || len(c.Subject) > stream.MaxIDLen {
		return fmt.Errorf("the sub claim (the user) must be 1 to %d bytes, not %d", stream.MaxIDLen, len(c.Subject))
	}
	if c.ExpiresAt.IsZero() {
		return errors.New("the exp claim is missing: tokens must expire")
	}
	for _, p := range c.Subscribe {
		if err := ValidatePattern(p); err != nil {
			return fmt.Errorf("subscribe claim: %w", err)
		}
	}
	for _, p := range c.Publish {
		if err := ValidatePattern(p); err != nil {
			return fmt.Errorf("publish claim: %w", err)
		}
	}
	return nil
}

// Mint signs c with key: a secret ([]byte, HS256), an ed25519.PrivateKey
// (EdDSA) or an *rsa.PrivateKey (RS256). c needs a Subject and an ExpiresAt,
// and its patterns must be valid.
func Mint(c Claims, key any) (string, error) {
	if err := c.check(); err != nil {
		return "", err
	}
	var method jwt.SigningMethod
	switch k := key.(type) {
	case []byte:
		if err := checkSecret(k); err != nil {
			return "", err
		}
		method = jwt.SigningMethodHS256
	case ed25519.PrivateKey:
		method = jwt.SigningMethodEdDSA
	case *rsa.PrivateKey:
		if err := checkKey(&k.PublicKey); err != nil {
			return "", err
		}
		method = jwt.SigningMethodRS256
	default:
		return "", fmt.Errorf("a %T key cannot sign tokens: use a secret ([]byte), an Ed25519 or an RSA private key", key)
	}
	return jwt.NewWithClaims(method, c.wire()).SignedString(key)
}
