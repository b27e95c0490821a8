package kv

import (
	"maps"
	"sync"
	"sync/atomic"

	"github.com/graft-raft/graft"
)

// Resolver implements graftkv's --resolve: it rewrites the raft address
// that the group's configuration gives a peer into the address this
// process dials, by peer id, without changing the replicated
// configuration (for proxies and NAT). Plug Resolve into the gRPC
// transport's Options.Resolve, and the Resolver into each Server's Config,
// which keeps it told of the configuration in force.
//
// A Resolver is safe for concurrent use.
type Resolver struct {
	overrides map[string]string // peer id → address to dial

	mu     sync.Mutex                        // serialises SetPeers
	byAddr atomic.Pointer[map[string]string] // configured address → peer id
}

// NewResolver returns a Resolver dialling overrides[id] for peer id.
func NewResolver(overrides map[string]string) *Resolver {
	r := &Resolver{overrides: maps.Clone(overrides)}
	r.byAddr.Store(&map[string]string{})
	return r
}

// SetPeers tells the resolver which peer ids the configured addresses
// belong to. Addresses seen before stay known.
func (r *Resolver) SetPeers(peers []graft.Peer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := *r.byAddr.Load()
	var next map[string]string
	for _, p := range peers {
		if cur[p.Addr] != p.ID {
			if next == nil {
				next = maps.Clone(cur)
			}
			next[p.Addr] = p.ID
		}
	}
	if next != nil {
		r.byAddr.Store(&next)
	}
}

// Resolve returns the address to dial for the configured address addr:
// the override of the peer that has addr, or addr itself.
func (r *Resolver) Resolve(addr string) string {
	if r == nil || len(r.overrides) == 0 {
		return addr
	}
	if id, ok := (*r.byAddr.Load())[addr]; ok {
		if to, ok := r.overrides[id]; ok {
			return to
		}
	}
	return addr
}
