package conf

import (
	"errors"
	"testing"
)

func TestParsePeers(t *testing.T) {
	ps, err := ParsePeers("a=127.0.0.1:1, b=h:2")
	if err != nil || len(ps) != 2 || ps[1] != (Peer{ID: "b", Addr: "h:2"}) {
		t.Fatalf("ParsePeers = %v, %v", ps, err)
	}
	for _, bad := range []string{"a", "=x:1", "a=", "a=1,b"} {
		if _, err := ParsePeers(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParsePeers(%q) err = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestConfigurationRoundTrip(t *testing.T) {
	c := Configuration{
		Peers:    []Peer{{"a", "h:1"}, {"b", "h:2"}},
		OldPeers: []Peer{{"a", "h:1"}, {"c", "h:3"}},
		Learners: []Peer{{"l", "h:9"}},
	}
	got, err := Decode(c.Encode())
	if err != nil || !got.Equal(c) {
		t.Fatalf("round trip: %v, %v", got, err)
	}
	if !c.IsJoint() || !c.IsVoter("c") || c.IsVoter("l") || !c.Contains("l") {
		t.Fatal("membership predicates wrong")
	}
	if n := len(c.Members()); n != 4 {
		t.Fatalf("Members = %d, want 4", n)
	}
	if _, err := Decode([]byte{0xff, 0xff}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Decode(garbage) err = %v", err)
	}
}

func TestValidate(t *testing.T) {
	bad := []Configuration{
		{Peers: []Peer{{"a", "h:1"}, {"a", "h:1"}}},
		{Peers: []Peer{{"a", "h:1"}}, Learners: []Peer{{"a", "h:1"}}},
		{Peers: []Peer{{"a", "h:1"}}, OldPeers: []Peer{{"a", "h:2"}}},
		{Peers: []Peer{{"", "h:1"}}},
		{Peers: []Peer{{"a=b", "h:1"}}},
	}
	for _, c := range bad {
		if err := c.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("Validate(%v) = %v, want ErrInvalid", c, err)
		}
	}
}

func TestManager(t *testing.T) {
	var m Manager
	m.SetSnapshot(Entry{Conf: Configuration{Peers: []Peer{{"a", "h:1"}}}})
	c2 := Configuration{Peers: []Peer{{"a", "h:1"}, {"b", "h:2"}}}
	c5 := Configuration{Peers: []Peer{{"b", "h:2"}}}
	m.Add(Entry{Index: 2, Term: 1, Conf: c2})
	m.Add(Entry{Index: 5, Term: 2, Conf: c5})
	if e := m.At(4); e.Index != 2 {
		t.Fatalf("At(4) = %d", e.Index)
	}
	if e := m.At(1); e.Index != 0 {
		t.Fatalf("At(1) = %d", e.Index)
	}
	m.TruncateSuffix(4)
	if e := m.Last(); e.Index != 2 {
		t.Fatalf("Last after truncate = %d", e.Index)
	}
	m.Add(Entry{Index: 6, Term: 3, Conf: c5})
	m.TruncatePrefix(7) // the entry at 6 is still in force
	if e := m.Last(); e.Index != 6 {
		t.Fatalf("Last after prefix truncation = %d", e.Index)
	}
	m.SetSnapshot(Entry{Index: 10, Term: 3, Conf: c2})
	if e := m.Last(); e.Index != 10 || !e.Conf.Equal(c2) {
		t.Fatalf("Last after snapshot = %+v", e)
	}
}
