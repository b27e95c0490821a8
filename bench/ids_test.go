package main

import (
	"encoding/binary"
	"testing"
)

func TestAppliedIDs(t *testing.T) {
	s := newAppliedIDs()
	cmd := func(id uint64) []byte {
		b := make([]byte, 16)
		binary.BigEndian.PutUint64(b, id)
		return b
	}
	s.add(cmd(1))
	s.add(cmd(3))
	s.add([]byte{1, 2, 3}) // too short to carry an id: ignored
	if n := s.missing([]uint64{1, 3}); n != 0 {
		t.Errorf("missing(1, 3) = %d, want 0", n)
	}
	if n := s.missing([]uint64{1, 2, 3, 4}); n != 2 {
		t.Errorf("missing(1, 2, 3, 4) = %d, want 2", n)
	}
}
