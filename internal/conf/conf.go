// Package conf holds raft group membership: peers, configurations (stable
// or joint), and the history of configurations by log index. It is pure:
// no I/O, no goroutines.
package conf

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/graft-raft/graft/raftpb"
	"google.golang.org/protobuf/proto"
)

// ErrInvalid reports a malformed peer or configuration.
var ErrInvalid = errors.New("conf: invalid configuration")

// Peer is one member of a group: a stable identity and the address its
// process listens on for raft RPCs.
type Peer struct {
	ID   string
	Addr string
}

// String returns the peer in the "id=host:port" form used on the wire.
func (p Peer) String() string { return p.ID + "=" + p.Addr }

// ParsePeer parses "id=host:port".
func ParsePeer(s string) (Peer, error) {
	id, addr, ok := strings.Cut(s, "=")
	if !ok || id == "" || addr == "" {
		return Peer{}, fmt.Errorf("%w: peer %q is not of the form id=host:port", ErrInvalid, s)
	}
	return Peer{ID: id, Addr: addr}, nil
}

// ParsePeers parses a comma-separated list of "id=host:port".
func ParsePeers(s string) ([]Peer, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []Peer
	for _, f := range strings.Split(s, ",") {
		p, err := ParsePeer(strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// Configuration is a group's membership. It is joint while OldPeers is
// non-empty: then decisions need a quorum of Peers and of OldPeers.
// Learners receive the log but never vote.
type Configuration struct {
	Peers    []Peer
	OldPeers []Peer
	Learners []Peer
}

// IsJoint reports whether c is a joint configuration.
func (c Configuration) IsJoint() bool { return len(c.OldPeers) > 0 }

// IsEmpty reports whether c has no voters.
func (c Configuration) IsEmpty() bool { return len(c.Peers) == 0 && len(c.OldPeers) == 0 }

// IsVoter reports whether id votes in c (in either half of a joint one).
func (c Configuration) IsVoter(id string) bool {
	return indexOf(c.Peers, id) >= 0 || indexOf(c.OldPeers, id) >= 0
}

// Contains reports whether id is a voter or learner in c.
func (c Configuration) Contains(id string) bool {
	return c.IsVoter(id) || indexOf(c.Learners, id) >= 0
}

// Lookup returns the peer with id, searching voters then learners.
func (c Configuration) Lookup(id string) (Peer, bool) {
	for _, set := range [][]Peer{c.Peers, c.OldPeers, c.Learners} {
		if i := indexOf(set, id); i >= 0 {
			return set[i], true
		}
	}
	return Peer{}, false
}

// Members returns every distinct peer of c: voters of both halves, then
// learners.
func (c Configuration) Members() []Peer {
	var out []Peer
	seen := map[string]bool{}
	for _, set := range [][]Peer{c.Peers, c.OldPeers, c.Learners} {
		for _, p := range set {
			if !seen[p.ID] {
				seen[p.ID] = true
				out = append(out, p)
			}
		}
	}
	return out
}

// Voters returns every distinct voter of c.
func (c Configuration) Voters() []Peer {
	return Configuration{Peers: c.Peers, OldPeers: c.OldPeers}.Members()
}

// Clone returns a deep copy of c.
func (c Configuration) Clone() Configuration {
	return Configuration{Peers: slices.Clone(c.Peers), OldPeers: slices.Clone(c.OldPeers), Learners: slices.Clone(c.Learners)}
}

// Equal reports whether c and o have the same members in the same roles,
// ignoring order.
func (c Configuration) Equal(o Configuration) bool {
	return sameSet(c.Peers, o.Peers) && sameSet(c.OldPeers, o.OldPeers) && sameSet(c.Learners, o.Learners)
}

// Validate checks that ids are unique within each set, non-empty, that no
// learner is a voter, and that a peer keeps one address.
func (c Configuration) Validate() error {
	addrs := map[string]string{}
	for _, set := range [][]Peer{c.Peers, c.OldPeers, c.Learners} {
		seen := map[string]bool{}
		for _, p := range set {
			if p.ID == "" || p.Addr == "" || strings.ContainsAny(p.ID, "=,") {
				return fmt.Errorf("%w: bad peer %q", ErrInvalid, p.String())
			}
			if seen[p.ID] {
				return fmt.Errorf("%w: peer %q listed twice", ErrInvalid, p.ID)
			}
			seen[p.ID] = true
			if a, ok := addrs[p.ID]; ok && a != p.Addr {
				return fmt.Errorf("%w: peer %q has two addresses %q and %q", ErrInvalid, p.ID, a, p.Addr)
			}
			addrs[p.ID] = p.Addr
		}
	}
	for _, l := range c.Learners {
		if c.IsVoter(l.ID) {
			return fmt.Errorf("%w: peer %q is both voter and learner", ErrInvalid, l.ID)
		}
	}
	return nil
}

// String renders c for logs.
func (c Configuration) String() string {
	s := "peers=" + joinPeers(c.Peers)
	if c.IsJoint() {
		s += " old_peers=" + joinPeers(c.OldPeers)
	}
	if len(c.Learners) > 0 {
		s += " learners=" + joinPeers(c.Learners)
	}
	return s
}

// ToProto converts c to its wire form.
func (c Configuration) ToProto() *raftpb.Configuration {
	return &raftpb.Configuration{Peers: Strings(c.Peers), OldPeers: Strings(c.OldPeers), Learners: Strings(c.Learners)}
}

// FromProto converts and validates a wire configuration.
func FromProto(pb *raftpb.Configuration) (Configuration, error) {
	var c Configuration
	var err error
	if c.Peers, err = parseAll(pb.GetPeers()); err != nil {
		return Configuration{}, err
	}
	if c.OldPeers, err = parseAll(pb.GetOldPeers()); err != nil {
		return Configuration{}, err
	}
	if c.Learners, err = parseAll(pb.GetLearners()); err != nil {
		return Configuration{}, err
	}
	return c, c.Validate()
}

// Encode returns the bytes stored in a configuration entry.
func (c Configuration) Encode() []byte {
	b, err := proto.Marshal(c.ToProto())
	if err != nil {
		panic(fmt.Sprintf("conf: marshal: %v", err)) // cannot fail for this message
	}
	return b
}

// Decode parses the data of a configuration entry.
func Decode(data []byte) (Configuration, error) {
	var pb raftpb.Configuration
	if err := proto.Unmarshal(data, &pb); err != nil {
		return Configuration{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return FromProto(&pb)
}

// FromSnapshotMeta returns the configuration recorded in a snapshot meta.
func FromSnapshotMeta(m *raftpb.SnapshotMeta) (Configuration, error) {
	return FromProto(&raftpb.Configuration{Peers: m.GetPeers(), OldPeers: m.GetOldPeers(), Learners: m.GetLearners()})
}

// Strings renders peers as "id=addr" strings.
func Strings(ps []Peer) []string {
	if len(ps) == 0 {
		return nil
	}
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

func parseAll(ss []string) ([]Peer, error) {
	if len(ss) == 0 {
		return nil, nil
	}
	out := make([]Peer, len(ss))
	for i, s := range ss {
		p, err := ParsePeer(s)
		if err != nil {
			return nil, err
		}
		out[i] = p
	}
	return out, nil
}

func joinPeers(ps []Peer) string { return "[" + strings.Join(Strings(ps), ",") + "]" }

func indexOf(ps []Peer, id string) int {
	for i, p := range ps {
		if p.ID == id {
			return i
		}
	}
	return -1
}

func sameSet(a, b []Peer) bool {
	if len(a) != len(b) {
		return false
	}
	for _, p := range a {
		i := indexOf(b, p.ID)
		if i < 0 || b[i].Addr != p.Addr {
			return false
		}
	}
	return true
}

// Entry is a configuration together with the log position that set it.
type Entry struct {
	Index uint64
	Term  uint64
	Conf  Configuration
}

// Manager is the history of configurations by log index: the snapshot's
// configuration plus every configuration entry in the log. A configuration
// is in force from the moment it is appended (Raft §6). Not safe for
// concurrent use: its owner (the log manager) serialises calls.
type Manager struct {
	snapshot Entry
	entries  []Entry // ascending Index, all > snapshot.Index
}

// Add records a configuration entry appended at e.Index, which must be
// greater than every index recorded so far.
func (m *Manager) Add(e Entry) {
	if n := len(m.entries); n > 0 && m.entries[n-1].Index >= e.Index {
		panic(fmt.Sprintf("conf: configuration at %d added after %d", e.Index, m.entries[n-1].Index))
	}
	m.entries = append(m.entries, e)
}

// TruncateSuffix forgets configurations of entries after lastKept.
func (m *Manager) TruncateSuffix(lastKept uint64) {
	for len(m.entries) > 0 && m.entries[len(m.entries)-1].Index > lastKept {
		m.entries = m.entries[:len(m.entries)-1]
	}
}

// TruncatePrefix forgets configurations of entries before firstKept,
// except the latest of those, which is still in force.
func (m *Manager) TruncatePrefix(firstKept uint64) {
	i := 0
	for i+1 < len(m.entries) && m.entries[i+1].Index < firstKept {
		i++
	}
	if i > 0 {
		m.entries = slices.Delete(m.entries, 0, i)
	}
}

// SetSnapshot records the configuration of a snapshot covering the log up
// to e.Index, forgetting every entry at or before it.
func (m *Manager) SetSnapshot(e Entry) {
	m.snapshot = e
	i := 0
	for i < len(m.entries) && m.entries[i].Index <= e.Index {
		i++
	}
	m.entries = slices.Delete(m.entries, 0, i)
}

// Snapshot returns the configuration recorded by SetSnapshot.
func (m *Manager) Snapshot() Entry { return m.snapshot }

// Last returns the latest configuration: the one in force now.
func (m *Manager) Last() Entry {
	if n := len(m.entries); n > 0 {
		return m.entries[n-1]
	}
	return m.snapshot
}

// At returns the configuration in force at log index idx.
func (m *Manager) At(idx uint64) Entry {
	for i := len(m.entries) - 1; i >= 0; i-- {
		if m.entries[i].Index <= idx {
			return m.entries[i]
		}
	}
	return m.snapshot
}
