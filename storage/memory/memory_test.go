package memory

import (
	"errors"
	"sync"
	"testing"

	"github.com/graft-raft/graft/internal/leakcheck"
	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/storage"
)

func TestMain(m *testing.M) {
	leakcheck.VerifyTestMain(m)
}

func ents(lo, hi, term uint64) []*raftpb.Entry {
	var out []*raftpb.Entry
	for i := lo; i < hi; i++ {
		out = append(out, &raftpb.Entry{Index: i, Term: term, Data: make([]byte, 10)})
	}
	return out
}

func wantRange(t *testing.T, l *Log, first, last uint64) {
	t.Helper()
	if l.FirstIndex() != first || l.LastIndex() != last {
		t.Fatalf("log is [%d, %d], want [%d, %d]", l.FirstIndex(), l.LastIndex(), first, last)
	}
	if last >= first {
		es, err := l.Entries(first, last+1, 0)
		if err != nil || len(es) != int(last+1-first) {
			t.Fatalf("Entries = %d entries, %v", len(es), err)
		}
		for i, e := range es {
			if e.Index != first+uint64(i) {
				t.Fatalf("entry %d has index %d", first+uint64(i), e.Index)
			}
		}
	}
}

func TestLog(t *testing.T) {
	l := NewLog()
	wantRange(t, l, 1, 0)
	if err := l.Append(ents(2, 3, 1)); !errors.Is(err, storage.ErrOutOfRange) {
		t.Fatalf("Append at 2 = %v", err)
	}
	if err := l.Append(ents(1, 11, 1)); err != nil {
		t.Fatal(err)
	}
	if err := l.Append([]*raftpb.Entry{nil}); err == nil {
		t.Fatal("Append(nil entry) succeeded")
	}
	if err := l.Append(ents(12, 13, 1)); !errors.Is(err, storage.ErrOutOfRange) {
		t.Fatalf("Append with a gap = %v", err)
	}
	wantRange(t, l, 1, 10)
	if term, err := l.Term(10); err != nil || term != 1 {
		t.Fatalf("Term(10) = %d, %v", term, err)
	}
	for _, i := range []uint64{0, 11} {
		if _, err := l.Term(i); !errors.Is(err, storage.ErrOutOfRange) {
			t.Fatalf("Term(%d) = %v", i, err)
		}
	}
	for _, r := range [][2]uint64{{0, 2}, {5, 12}, {6, 5}} {
		if _, err := l.Entries(r[0], r[1], 0); !errors.Is(err, storage.ErrOutOfRange) {
			t.Fatalf("Entries(%d, %d) = %v", r[0], r[1], err)
		}
	}

	// maxBytes: at least one entry; stop after crossing.
	for _, tc := range []struct{ max, want uint64 }{{1, 1}, {10, 2}, {19, 2}, {20, 3}, {1000, 10}} {
		if es, _ := l.Entries(1, 11, tc.max); uint64(len(es)) != tc.want {
			t.Errorf("Entries(1, 11, %d) returned %d entries, want %d", tc.max, len(es), tc.want)
		}
	}
	// The returned slice is the caller's.
	es, _ := l.Entries(1, 3, 0)
	es[0] = nil
	if es, _ := l.Entries(1, 2, 0); es[0] == nil {
		t.Fatal("Entries returned the log's own slice")
	}

	if err := l.TruncateSuffix(7); err != nil {
		t.Fatal(err)
	}
	wantRange(t, l, 1, 7)
	if err := l.TruncatePrefix(4); err != nil {
		t.Fatal(err)
	}
	wantRange(t, l, 4, 7)
	if err := l.TruncatePrefix(2); err != nil {
		t.Fatal(err)
	}
	wantRange(t, l, 4, 7)
	if err := l.TruncateSuffix(0); err != nil {
		t.Fatal(err)
	}
	wantRange(t, l, 4, 3)
	if err := l.Append(ents(4, 6, 2)); err != nil {
		t.Fatal(err)
	}
	if err := l.TruncatePrefix(20); err != nil {
		t.Fatal(err)
	}
	wantRange(t, l, 20, 19)
	if err := l.Append(ents(20, 22, 3)); err != nil {
		t.Fatal(err)
	}
	wantRange(t, l, 20, 21)
	if err := l.Reset(0); !errors.Is(err, storage.ErrOutOfRange) {
		t.Fatalf("Reset(0) = %v", err)
	}
	if err := l.Reset(5); err != nil {
		t.Fatal(err)
	}
	wantRange(t, l, 5, 4)
	if err := l.Append(ents(5, 6, 4)); err != nil {
		t.Fatal(err)
	}
	wantRange(t, l, 5, 5)

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"Append":         l.Append(ents(6, 7, 4)),
		"TruncateSuffix": l.TruncateSuffix(1),
		"TruncatePrefix": l.TruncatePrefix(6),
		"Reset":          l.Reset(1),
	} {
		if !errors.Is(err, storage.ErrClosed) {
			t.Errorf("%s after Close = %v", name, err)
		}
	}
	if _, err := l.Entries(5, 6, 0); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("Entries after Close = %v", err)
	}
	if _, err := l.Term(5); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("Term after Close = %v", err)
	}
}

func TestLogConcurrent(t *testing.T) {
	l := NewLog()
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				first, last := l.FirstIndex(), l.LastIndex()
				es, err := l.Entries(first, last+1, 0)
				if err != nil && !errors.Is(err, storage.ErrOutOfRange) {
					t.Error(err)
					return
				}
				for i, e := range es {
					if e.Index != first+uint64(i) {
						t.Errorf("entry %d has index %d", first+uint64(i), e.Index)
						return
					}
				}
			}
		})
	}
	for i := uint64(1); i < 2000; i += 10 {
		if err := l.Append(ents(l.LastIndex()+1, l.LastIndex()+11, i)); err != nil {
			t.Fatal(err)
		}
		if i%50 == 1 && l.LastIndex() > 30 {
			l.TruncateSuffix(l.LastIndex() - 3)
			l.TruncatePrefix(l.LastIndex() - 20)
		}
	}
	close(done)
	wg.Wait()
}

func TestMeta(t *testing.T) {
	m := NewMeta()
	if term, vote, err := m.Load(); term != 0 || vote != "" || err != nil {
		t.Fatalf("Load = %d, %q, %v", term, vote, err)
	}
	if err := m.Save(3, "a"); err != nil {
		t.Fatal(err)
	}
	if term, vote, err := m.Load(); term != 3 || vote != "a" || err != nil {
		t.Fatalf("Load = %d, %q, %v", term, vote, err)
	}
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			m.Save(uint64(i), "x")
			m.Load()
		})
	}
	wg.Wait()
	m.Close()
	if _, _, err := m.Load(); !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("Load after Close = %v", err)
	}
	if err := m.Save(1, ""); !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("Save after Close = %v", err)
	}
}
