package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/quicpush/quicpush/auth"
	"github.com/quicpush/quicpush/stream"
)

type tokenCmd struct {
	Sub        string        `required:"" env:"QUICPUSH_TOKEN_SUB" placeholder:"USER" help:"The user the token is for (its sub claim)."`
	SecretFile string        `xor:"key" required:"" env:"QUICPUSH_TOKEN_SECRET_FILE" placeholder:"FILE" help:"Sign with HS256 and the secret in FILE (the file quicpushd gets as --jwt-secret-file)."`
	KeyFile    string        `xor:"key" required:"" env:"QUICPUSH_TOKEN_KEY_FILE" placeholder:"FILE" help:"Sign with EdDSA (or RS256) and the PEM private key in FILE (quicpushd gets its public key as --jwt-public-key)."`
	TTL        time.Duration `name:"ttl" default:"1h" env:"QUICPUSH_TOKEN_TTL" placeholder:"D" help:"How long the token is valid (default: ${default})."`
	Subscribe  []string      `sep:"none" env:"QUICPUSH_TOKEN_SUBSCRIBE" placeholder:"PATTERN" help:"A channel pattern the user may subscribe to and read, e.g. 'room/*' or 'user/{sub}/**'; repeat for more."`
	Publish    []string      `sep:"none" env:"QUICPUSH_TOKEN_PUBLISH" placeholder:"PATTERN" help:"A channel pattern the user may publish to; repeat for more."`
	Role       string        `env:"QUICPUSH_TOKEN_ROLE" help:"The user's role, e.g. teacher: only quicpushd's --room-publisher-roles may publish reliable messages to room/** channels."`

	key any // loaded by Validate
}

// Help explains the output, below the flags of "quicpush token --help".
func (tokenCmd) Help() string {
	return `Mints a JWT for quicpushd --jwt-secret-file or --jwt-public-key and prints
  {"token","expires"}
(expires in RFC 3339). Patterns: '*' matches one segment of a channel name,
a last '**' the rest (even nothing), '{sub}' the user; see docs/API.md.
Use it as: --token "$(quicpush token ... | jq -r .token)".`
}

func (c *tokenCmd) Validate() error {
	if c.Sub == "" || (c.SecretFile == "" && c.KeyFile == "") {
		return nil // kong reports the missing flags
	}
	if len(c.Sub) > stream.MaxIDLen {
		return fmt.Errorf("--sub must be at most %d bytes", stream.MaxIDLen)
	}
	if c.TTL <= 0 {
		return errors.New("--ttl must be positive")
	}
	for _, p := range c.Subscribe {
		if err := auth.ValidatePattern(p); err != nil {
			return fmt.Errorf("--subscribe: %w", err)
		}
	}
	for _, p := range c.Publish {
		if err := auth.ValidatePattern(p); err != nil {
			return fmt.Errorf("--publish: %w", err)
		}
	}
	// A key file that cannot be used is a wrong argument: exit 2.
	var err error
	if c.SecretFile != "" {
		if c.key, err = auth.LoadSecret(c.SecretFile); err != nil {
			return fmt.Errorf("--secret-file: %w", err)
		}
	} else if c.key, err = auth.LoadPrivateKey(c.KeyFile); err != nil {
		return fmt.Errorf("--key-file: %w", err)
	}
	return nil
}

type tokenLine struct {
	Token   string `json:"token"`
	Expires string `json:"expires"`
}

func (c *tokenCmd) Run(_ context.Context, e *env) error {
	now := time.Now()
	claims := auth.Claims{
		Subject:   c.Sub,
		ExpiresAt: now.Add(c.TTL).Truncate(time.Second), // what the token holds
		IssuedAt:  now,
		Subscribe: c.Subscribe,
		Publish:   c.Publish,
		Role:      c.Role,
	}
	token, err := auth.Mint(claims, c.key)
	if err != nil {
		return fmt.Errorf("cannot sign the token: %w", err)
	}
	if err := writeLine(e.stdout, tokenLine{Token: token, Expires: claims.ExpiresAt.UTC().Format(time.RFC3339)}); err != nil {
		return fmt.Errorf("cannot write to stdout: %w", err)
	}
	return nil
}
