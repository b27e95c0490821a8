package memory

import (
	"sync"

	"github.com/graft-raft/graft/storage"
)

// Meta is an in-memory storage.MetaStorage. It is safe for concurrent use.
type Meta struct {
	mu struct {
		sync.Mutex
		term   uint64
		vote   string
		closed bool
	}
}

var _ storage.MetaStorage = (*Meta)(nil)

// NewMeta returns a Meta holding term 0 and no vote.
func NewMeta() *Meta { return &Meta{} }

// Load implements storage.MetaStorage.
func (m *Meta) Load() (term uint64, votedFor string, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mu.closed {
		return 0, "", storage.ErrClosed
	}
	return m.mu.term, m.mu.vote, nil
}

// Save implements storage.MetaStorage.
func (m *Meta) Save(term uint64, votedFor string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mu.closed {
		return storage.ErrClosed
	}
	m.mu.term, m.mu.vote = term, votedFor
	return nil
}

// Close implements storage.MetaStorage. Later Load and Save calls return
// storage.ErrClosed.
func (m *Meta) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mu.closed = true
	return nil
}
