package kv

import (
	"testing"

	"github.com/graft-raft/graft"
)

func TestResolver(t *testing.T) {
	r := NewResolver(map[string]string{"n2": "proxy:7002"})
	if got := r.Resolve("10.0.0.2:7000"); got != "10.0.0.2:7000" {
		t.Fatalf("before the configuration is known: %q", got)
	}
	r.SetPeers([]graft.Peer{{ID: "n1", Addr: "10.0.0.1:7000"}, {ID: "n2", Addr: "10.0.0.2:7000"}})
	for addr, want := range map[string]string{
		"10.0.0.1:7000": "10.0.0.1:7000", // no override
		"10.0.0.2:7000": "proxy:7002",
		"10.0.0.9:7000": "10.0.0.9:7000", // unknown address
	} {
		if got := r.Resolve(addr); got != want {
			t.Errorf("Resolve(%q) = %q, want %q", addr, got, want)
		}
	}
	// n2 moves: its new configured address is overridden too.
	r.SetPeers([]graft.Peer{{ID: "n2", Addr: "10.0.1.2:7000"}})
	if got := r.Resolve("10.0.1.2:7000"); got != "proxy:7002" {
		t.Errorf("after n2 moved: %q", got)
	}
	var none *Resolver
	if got := none.Resolve("a:1"); got != "a:1" {
		t.Errorf("nil resolver: %q", got)
	}
}
