package client

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// Position is a point in a channel's log: every message up to Seq of Epoch
// has been handled.
type Position struct {
	Epoch uint64 `json:"epoch"`
	Seq   uint64 `json:"seq"`
}

// PositionStore persists the positions the application has handled, so a
// restarted client goes on right after them. Save is called after the
// handler returned and before the message is acknowledged; an app that
// wants its own effect and the position committed together implements this
// interface over its own database.
type PositionStore interface {
	Load(channel string) (pos Position, ok bool, err error)
	Save(channel string, pos Position) error
}

// MemoryStore keeps positions in memory: a restart starts over.
type MemoryStore struct {
	mu  sync.Mutex
	pos map[string]Position
}

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore { return &MemoryStore{pos: map[string]Position{}} }

func (m *MemoryStore) Load(channel string) (Position, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.pos[channel]
	return p, ok, nil
}

func (m *MemoryStore) Save(channel string, pos Position) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pos[channel] = pos
	return nil
}

// FileStore keeps every channel's position in one JSON file, replaced
// atomically (write, fsync, rename, fsync the directory) on every Save, so a
// crash leaves either the old or the new file, never a torn one.
type FileStore struct {
	path string
	mu   sync.Mutex
	pos  map[string]Position
}

// OpenFileStore reads path if it exists.
func OpenFileStore(path string) (*FileStore, error) {
	f := &FileStore{path: path, pos: map[string]Position{}}
	b, err := os.ReadFile(path)
	switch {
	case os.IsNotExist(err):
		return f, nil
	case err != nil:
		return nil, fmt.Errorf("client: read state %s: %w", path, err)
	}
	if err := json.Unmarshal(b, &f.pos); err != nil {
		return nil, fmt.Errorf("client: state file %s is not valid JSON: %w", path, err)
	}
	return f, nil
}

func (f *FileStore) Load(channel string) (Position, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.pos[channel]
	return p, ok, nil
}

func (f *FileStore) Save(channel string, pos Position) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pos[channel] = pos
	b, err := json.Marshal(f.pos)
	if err != nil {
		return err
	}
	return writeFileAtomic(f.path, b)
}

func writeFileAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("client: save state: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("client: save state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("client: save state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("client: save state: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("client: save state: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
