package ballot

import (
	"testing"

	"github.com/graft-raft/graft/internal/conf"
)

func peers(ids ...string) []conf.Peer {
	var out []conf.Peer
	for _, id := range ids {
		out = append(out, conf.Peer{ID: id, Addr: id + ":1"})
	}
	return out
}

func TestCommittedIndex(t *testing.T) {
	tests := []struct {
		name  string
		c     conf.Configuration
		match map[string]uint64
		want  uint64
	}{
		{"single", conf.Configuration{Peers: peers("a")}, map[string]uint64{"a": 7}, 7},
		{"three", conf.Configuration{Peers: peers("a", "b", "c")}, map[string]uint64{"a": 9, "b": 5, "c": 2}, 5},
		{"three-one-behind", conf.Configuration{Peers: peers("a", "b", "c")}, map[string]uint64{"a": 9}, 0},
		{"four", conf.Configuration{Peers: peers("a", "b", "c", "d")}, map[string]uint64{"a": 9, "b": 8, "c": 7, "d": 1}, 7},
		{"five", conf.Configuration{Peers: peers("a", "b", "c", "d", "e")}, map[string]uint64{"a": 9, "b": 8, "c": 7, "d": 1}, 7},
		{"joint-old-lags", conf.Configuration{Peers: peers("a", "b", "c"), OldPeers: peers("a", "x", "y")},
			map[string]uint64{"a": 9, "b": 9, "c": 9, "x": 3}, 3},
		{"empty", conf.Configuration{}, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := CommittedIndex(tt.c, func(id string) uint64 { return tt.match[id] })
			if got != tt.want {
				t.Fatalf("CommittedIndex = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestTally(t *testing.T) {
	c := conf.Configuration{Peers: peers("a", "b", "c")}
	tl := NewTally(c)
	tl.Record("a", true)
	if r := tl.Result(); r != Pending {
		t.Fatalf("after one yes: %v", r)
	}
	tl.Record("zz", true) // not a voter
	tl.Record("b", false)
	tl.Record("b", true) // second answer ignored
	if r := tl.Result(); r != Pending {
		t.Fatalf("after yes,no: %v", r)
	}
	tl.Record("c", false)
	if r := tl.Result(); r != Lost {
		t.Fatalf("after yes,no,no: %v", r)
	}

	j := conf.Configuration{Peers: peers("a", "b", "c"), OldPeers: peers("a", "x", "y")}
	tl = NewTally(j)
	tl.Record("a", true)
	tl.Record("b", true)
	if r := tl.Result(); r != Pending {
		t.Fatalf("joint with new quorum only: %v", r)
	}
	tl.Record("x", true)
	if r := tl.Result(); r != Won {
		t.Fatalf("joint with both quorums: %v", r)
	}
	if !HasQuorum(c, func(id string) bool { return id != "c" }) || HasQuorum(c, func(id string) bool { return id == "a" }) {
		t.Fatal("HasQuorum wrong")
	}
}
