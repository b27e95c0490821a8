package segment

import (
	"bytes"
	"errors"
	"sync"
	"testing"

	"github.com/graft-raft/graft/storage"
	"github.com/graft-raft/graft/vfs"
)

// TestConcurrentReaders runs readers against a log that is being
// appended to, truncated at both ends and reset, under the race detector.
// Every entry a reader gets must be the one written at its index.
func TestConcurrentReaders(t *testing.T) {
	l := mustOpen(t, vfs.NewMem(), testOptions(t, 400))
	done := make(chan struct{})
	var wg sync.WaitGroup
	var reads [4]int
	for r := range reads {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				first, last := l.FirstIndex(), l.LastIndex()
				if last < first {
					continue
				}
				es, err := l.Entries(first, last+1, uint64(r)*40)
				if errors.Is(err, storage.ErrOutOfRange) {
					continue // truncated meanwhile
				}
				if err != nil {
					t.Error(err)
					return
				}
				for i, e := range es {
					if e.Index != first+uint64(i) || !bytes.Equal(e.Data, data(e.Index, e.Term)) {
						t.Errorf("reader %d: entry %d is %d/%d %q", r, first+uint64(i), e.Index, e.Term, e.Data)
						return
					}
				}
				if _, err := l.Term(last); err != nil && !errors.Is(err, storage.ErrOutOfRange) {
					t.Error(err)
					return
				}
				reads[r]++
			}
		})
	}

	m := model{first: 1}
	for round := uint64(1); round <= 150; round++ {
		var err error
		switch {
		case round%50 == 0:
			err = l.Reset(m.last() + 5)
			m.reset(m.last() + 5)
		case round%20 == 0:
			err = l.TruncatePrefix(m.last() - 10)
			m.truncatePrefix(m.last() - 10)
		case round%7 == 0:
			err = l.TruncateSuffix(m.last() - 3)
			m.truncateSuffix(m.last() - 3)
		default:
			es := ents(m.last()+1, m.last()+1+round%5+1, round)
			err = l.Append(es)
			m.append(es)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	wg.Wait()
	check(t, l, m)
	t.Logf("reads per reader: %v", reads)
}
