// Package ballot holds the quorum arithmetic of raft: which index a quorum
// of a (possibly joint) configuration has durably stored, and whether an
// election has been won or lost. It is pure: no I/O, no goroutines, no
// clock.
package ballot

import (
	"slices"

	"github.com/graft-raft/graft/internal/conf"
)

// CommittedIndex returns the highest index that a quorum of every half of c
// has stored, given each voter's match index. In a joint configuration
// that is the lower of the two halves' quorum indexes. It returns 0 for an
// empty configuration.
func CommittedIndex(c conf.Configuration, match func(id string) uint64) uint64 {
	idx := quorumIndex(c.Peers, match)
	if c.IsJoint() {
		idx = min(idx, quorumIndex(c.OldPeers, match))
	}
	return idx
}

func quorumIndex(peers []conf.Peer, match func(string) uint64) uint64 {
	if len(peers) == 0 {
		return 0
	}
	var buf [16]uint64
	ms := buf[:0]
	for _, p := range peers {
		ms = append(ms, match(p.ID))
	}
	slices.Sort(ms)
	// With n voters a quorum is n/2+1; the highest index stored by that many
	// is the (n/2+1)-th largest, at position n - (n/2+1) ascending.
	return ms[len(ms)-(len(ms)/2+1)]
}

// Result is the state of a vote count.
type Result int

// Vote count outcomes.
const (
	Pending Result = iota
	Won
	Lost
)

// String names the result.
func (r Result) String() string {
	switch r {
	case Won:
		return "won"
	case Lost:
		return "lost"
	}
	return "pending"
}

// Tally counts the answers of one election (or pre-vote) in a
// configuration. A voter's first answer counts; later ones are ignored.
type Tally struct {
	conf  conf.Configuration
	votes map[string]bool
}

// NewTally starts a count for c.
func NewTally(c conf.Configuration) *Tally {
	return &Tally{conf: c, votes: make(map[string]bool)}
}

// Record notes voter id's answer. Answers from non-voters are ignored.
func (t *Tally) Record(id string, granted bool) {
	if !t.conf.IsVoter(id) {
		return
	}
	if _, ok := t.votes[id]; !ok {
		t.votes[id] = granted
	}
}

// Result tells whether every half of the configuration has a granting
// quorum (Won), whether some half can no longer reach one (Lost), or
// neither yet (Pending).
func (t *Tally) Result() Result {
	r := t.half(t.conf.Peers)
	if t.conf.IsJoint() {
		o := t.half(t.conf.OldPeers)
		if r == Lost || o == Lost {
			return Lost
		}
		if r == Won && o == Won {
			return Won
		}
		return Pending
	}
	return r
}

func (t *Tally) half(peers []conf.Peer) Result {
	if len(peers) == 0 {
		return Lost
	}
	yes, no := 0, 0
	for _, p := range peers {
		if g, ok := t.votes[p.ID]; ok {
			if g {
				yes++
			} else {
				no++
			}
		}
	}
	q := len(peers)/2 + 1
	switch {
	case yes >= q:
		return Won
	case no > len(peers)-q:
		return Lost
	}
	return Pending
}

// HasQuorum reports whether the set of ids (for example, peers heard from
// recently) includes a quorum of every half of c.
func HasQuorum(c conf.Configuration, ok func(id string) bool) bool {
	t := NewTally(c)
	for _, p := range c.Voters() {
		t.Record(p.ID, ok(p.ID))
	}
	return t.Result() == Won
}
