package certs

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Keys are the server secrets that must outlive a process. With them a
// restarted server answers packets of its previous run's connections with a
// stateless reset, accepts the address tokens it issued, and resumes TLS
// sessions (0-RTT included) from the tickets it issued. Keys is safe for
// concurrent use; the exported fields must not be modified.
type Keys struct {
	// StatelessResetKey is for quic.Transport.StatelessResetKey:
	// quic.StatelessResetKey(k.StatelessResetKey).
	StatelessResetKey [32]byte
	// TokenGeneratorKey is for quic.Transport.TokenGeneratorKey:
	// quic.TokenGeneratorKey(k.TokenGeneratorKey).
	TokenGeneratorKey [32]byte

	path    string
	mu      sync.Mutex
	tickets []ticketKey // the current key first, then the previous one
}

type ticketKey struct {
	Key     []byte    `json:"key"` // 32 bytes
	Created time.Time `json:"created"`
}

// keysFile is the JSON form of Keys in keys.json; []byte encodes as base64.
type keysFile struct {
	StatelessResetKey []byte      `json:"stateless_reset_key"`
	TokenGeneratorKey []byte      `json:"token_generator_key"`
	TicketKeys        []ticketKey `json:"ticket_keys"` // current first
}

// LoadOrCreateKeys reads dir/keys.json, or creates it (mode 0600) with fresh
// random keys. A file that exists but cannot be used is an error rather than
// replaced, since new keys would cut off every client of the previous run.
func LoadOrCreateKeys(dir string) (*Keys, error) {
	path := filepath.Join(dir, "keys.json")
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return createKeys(dir, path, time.Now())
	}
	if err != nil {
		return nil, fmt.Errorf("certs: read keys: %w", err)
	}
	var f keysFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("certs: %s: %w", path, err)
	}
	if err := f.check(); err != nil {
		return nil, fmt.Errorf("certs: %s: %w", path, err)
	}
	return &Keys{
		StatelessResetKey: [32]byte(f.StatelessResetKey),
		TokenGeneratorKey: [32]byte(f.TokenGeneratorKey),
		path:              path,
		tickets:           f.TicketKeys,
	}, nil
}

func createKeys(dir, path string, now time.Time) (*Keys, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	k := &Keys{
		StatelessResetKey: [32]byte(newKey()),
		TokenGeneratorKey: [32]byte(newKey()),
		path:              path,
		tickets:           []ticketKey{{Key: newKey(), Created: now.UTC()}},
	}
	if err := k.save(k.tickets); err != nil {
		return nil, err
	}
	return k, nil
}

func (f *keysFile) check() error {
	if len(f.StatelessResetKey) != 32 {
		return fmt.Errorf("stateless_reset_key: %d bytes, want 32", len(f.StatelessResetKey))
	}
	if len(f.TokenGeneratorKey) != 32 {
		return fmt.Errorf("token_generator_key: %d bytes, want 32", len(f.TokenGeneratorKey))
	}
	if len(f.TicketKeys) == 0 {
		return errors.New("ticket_keys: none")
	}
	for i, t := range f.TicketKeys {
		if len(t.Key) != 32 {
			return fmt.Errorf("ticket_keys[%d]: %d bytes, want 32", i, len(t.Key))
		}
	}
	return nil
}

// TicketKeys returns the session ticket keys for tls.Config.SetSessionTicketKeys:
// the current key (which seals new tickets) first, then the previous one.
func (k *Keys) TicketKeys() [][32]byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	keys := make([][32]byte, len(k.tickets))
	for i, t := range k.tickets {
		keys[i] = [32]byte(t.Key)
	}
	return keys
}

// RotateTicketKeys makes a new current ticket key when the current one is
// older than every. The previous current key is kept, so tickets it sealed
// still resume until the next rotation; older keys are dropped. The change is
// persisted before it takes effect. After a rotation, pass TicketKeys to
// tls.Config.SetSessionTicketKeys again.
func (k *Keys) RotateTicketKeys(now time.Time, every time.Duration) (rotated bool, err error) {
	if every <= 0 {
		return false, fmt.Errorf("certs: ticket key rotation interval %v, want > 0", every)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if now.Sub(k.tickets[0].Created) <= every {
		return false, nil
	}
	tickets := []ticketKey{{Key: newKey(), Created: now.UTC()}, k.tickets[0]}
	if err := k.save(tickets); err != nil {
		return false, err
	}
	k.tickets = tickets
	return true, nil
}

// String hides the secrets, so that printing Keys leaks nothing.
func (k *Keys) String() string { return "certs.Keys{redacted}" }

// LogValue hides the secrets from slog.
func (k *Keys) LogValue() slog.Value { return slog.StringValue(k.String()) }

func (k *Keys) save(tickets []ticketKey) error {
	data, err := json.MarshalIndent(keysFile{
		StatelessResetKey: k.StatelessResetKey[:],
		TokenGeneratorKey: k.TokenGeneratorKey[:],
		TicketKeys:        tickets,
	}, "", "  ")
	if err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	return writeFileAtomic(k.path, data, 0o600)
}

func newKey() []byte {
	b := make([]byte, 32)
	rand.Read(b) // never fails: it crashes the program instead (Go 1.24+)
	return b
}
