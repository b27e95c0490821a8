package main

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
)

// idLen is the length of the id a tracked command starts with.
const idLen = 8

// appliedIDs is the set of ids a state machine applied: the first idLen
// bytes of each command, big-endian. The failover workload turns it on to
// check, write by write, that the new leader applied every write a client
// saw acknowledged.
type appliedIDs struct {
	mu sync.Mutex
	m  map[uint64]struct{}
}

func newAppliedIDs() *appliedIDs { return &appliedIDs{m: make(map[uint64]struct{})} }

// add records data's id; commands shorter than an id are not tracked.
func (s *appliedIDs) add(data []byte) {
	if len(data) < idLen {
		return
	}
	id := binary.BigEndian.Uint64(data)
	s.mu.Lock()
	s.m[id] = struct{}{}
	s.mu.Unlock()
}

// missing returns how many of ids were not applied.
func (s *appliedIDs) missing(ids []uint64) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, id := range ids {
		if _, ok := s.m[id]; !ok {
			n++
		}
	}
	return n
}

// trackIDs puts a new, empty set in each state machine's slot, so that
// each records the ids it applies from now on, and returns the sets in
// slot order.
func trackIDs(slots []*atomic.Pointer[appliedIDs]) []*appliedIDs {
	sets := make([]*appliedIDs, len(slots))
	for i, slot := range slots {
		sets[i] = newAppliedIDs()
		slot.Store(sets[i])
	}
	return sets
}
