package logmanager

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/graft-raft/graft/internal/conf"
	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/storage"
	"github.com/graft-raft/graft/storage/memory"
)

func ents(lo, hi, term uint64) []*raftpb.Entry {
	var out []*raftpb.Entry
	for i := lo; i <= hi; i++ {
		out = append(out, &raftpb.Entry{Index: i, Term: term, Type: raftpb.EntryType_ENTRY_TYPE_NORMAL, Data: []byte{byte(i)}})
	}
	return out
}

func newManager(t *testing.T, s storage.LogStorage, cache int) *Manager {
	t.Helper()
	m, err := New(Options{Storage: s, CacheEntries: cache})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// appendSync appends and waits for durability.
func appendSync(t *testing.T, m *Manager, es []*raftpb.Entry) {
	t.Helper()
	done := make(chan error, 1)
	if err := m.Append(es, func(err error) { done <- err }); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestAppendReadAcrossCacheAndStorage(t *testing.T) {
	s := memory.NewLog()
	m := newManager(t, s, 4)
	for i := uint64(1); i <= 20; i += 5 {
		appendSync(t, m, ents(i, i+4, 1))
	}
	if m.LastIndex() != 20 || m.DurableIndex() != 20 || s.LastIndex() != 20 {
		t.Fatalf("last %d durable %d storage %d", m.LastIndex(), m.DurableIndex(), s.LastIndex())
	}
	got, err := m.Entries(1, 21, 0)
	if err != nil || len(got) != 20 {
		t.Fatalf("Entries = %d, %v", len(got), err)
	}
	for i, e := range got {
		if e.Index != uint64(i+1) {
			t.Fatalf("entry %d has index %d", i, e.Index)
		}
	}
	// maxBytes stops early but returns at least one entry.
	if got, _ := m.Entries(3, 21, 1); len(got) != 2 {
		t.Fatalf("Entries with maxBytes 1 = %d entries, want 2 (the one crossing the limit included)", len(got))
	}
	if _, err := m.Entries(5, 22, 0); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("beyond last: %v", err)
	}
	if tm, err := m.Term(7); err != nil || tm != 1 {
		t.Fatalf("Term(7) = %d, %v", tm, err)
	}
}

func TestAppendFollowerConflict(t *testing.T) {
	m := newManager(t, memory.NewLog(), 100)
	appendSync(t, m, ents(1, 10, 1))
	done := make(chan error, 1)
	// 1..5 match, 6.. conflict (term 2): the log is cut at 5 and replaced.
	if err := m.AppendFollower(ents(4, 8, 2)[0:0], 0, func(error) {}); err != nil {
		t.Fatal(err)
	}
	newEnts := append(ents(4, 5, 1), ents(6, 8, 2)...)
	if err := m.AppendFollower(newEnts, 3, func(err error) { done <- err }); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if m.LastIndex() != 8 {
		t.Fatalf("last = %d, want 8", m.LastIndex())
	}
	for i, want := range map[uint64]uint64{5: 1, 6: 2, 8: 2} {
		if tm, _ := m.Term(i); tm != want {
			t.Fatalf("Term(%d) = %d, want %d", i, tm, want)
		}
	}
	// A conflict at or below the commit index is refused.
	if err := m.AppendFollower(ents(2, 2, 9), 5, nil); err == nil {
		t.Fatal("conflict with a committed entry accepted")
	}
	// A gap is refused.
	if err := m.AppendFollower(ents(20, 21, 2), 5, nil); err == nil {
		t.Fatal("gap accepted")
	}
}

func TestDoneOrder(t *testing.T) {
	m := newManager(t, memory.NewLog(), 10)
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		if err := m.Append(ents(uint64(i+1), uint64(i+1), 1), func(err error) {
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			wg.Done()
		}); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	for i, v := range order {
		if v != i {
			t.Fatalf("done callbacks out of order: %v", order)
		}
	}
}

func TestSetSnapshot(t *testing.T) {
	c := conf.Configuration{Peers: []conf.Peer{{ID: "a", Addr: "h:1"}}}
	t.Run("same term keeps the log", func(t *testing.T) {
		m := newManager(t, memory.NewLog(), 100)
		appendSync(t, m, ents(1, 10, 2))
		m.SetSnapshot(6, 2, c, 4)
		if m.FirstIndex() != 4 || m.LastIndex() != 10 {
			t.Fatalf("first %d last %d, want 4 10", m.FirstIndex(), m.LastIndex())
		}
		if tm, _ := m.Term(6); tm != 2 {
			t.Fatal("term of the snapshot index lost")
		}
	})
	t.Run("different term discards the log", func(t *testing.T) {
		m := newManager(t, memory.NewLog(), 100)
		appendSync(t, m, ents(1, 10, 1))
		m.SetSnapshot(6, 3, c, 4)
		if m.FirstIndex() != 7 || m.LastIndex() != 6 {
			t.Fatalf("first %d last %d, want 7 6", m.FirstIndex(), m.LastIndex())
		}
		if tm, _ := m.Term(6); tm != 3 {
			t.Fatalf("Term(6) = %d, want the snapshot's 3", tm)
		}
		appendSync(t, m, ents(7, 7, 3))
	})
	t.Run("beyond the log restarts it", func(t *testing.T) {
		s := memory.NewLog()
		m := newManager(t, s, 100)
		appendSync(t, m, ents(1, 3, 1))
		m.SetSnapshot(50, 4, c, 40)
		if m.FirstIndex() != 51 || m.LastIndex() != 50 {
			t.Fatalf("first %d last %d", m.FirstIndex(), m.LastIndex())
		}
		appendSync(t, m, ents(51, 52, 4))
		if s.FirstIndex() != 51 || s.LastIndex() != 52 {
			t.Fatalf("storage first %d last %d", s.FirstIndex(), s.LastIndex())
		}
		if e := m.Configuration(); e.Index != 50 || !e.Conf.Equal(c) {
			t.Fatalf("configuration %+v", e)
		}
	})
}

func TestWait(t *testing.T) {
	m := newManager(t, memory.NewLog(), 10)
	ch := m.Wait(0)
	select {
	case <-ch:
		t.Fatal("Wait fired on an empty log")
	default:
	}
	appendSync(t, m, ents(1, 1, 1))
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not fire after an append")
	}
}

// failingLog fails every append.
type failingLog struct{ storage.LogStorage }

var errDisk = errors.New("disk on fire")

func (failingLog) Append([]*raftpb.Entry) error { return errDisk }

func TestStorageErrorIsSticky(t *testing.T) {
	m := newManager(t, failingLog{memory.NewLog()}, 10)
	done := make(chan error, 1)
	if err := m.Append(ents(1, 1, 1), func(err error) { done <- err }); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, errDisk) {
		t.Fatalf("done got %v, want the disk error", err)
	}
	if err := m.Append(ents(2, 2, 1), nil); !errors.Is(err, errDisk) {
		t.Fatalf("append after failure: %v", err)
	}
}

func TestConfigurationsReloaded(t *testing.T) {
	s := memory.NewLog()
	m, err := New(Options{Storage: s})
	if err != nil {
		t.Fatal(err)
	}
	c := conf.Configuration{Peers: []conf.Peer{{ID: "a", Addr: "h:1"}, {ID: "b", Addr: "h:2"}}}
	e := &raftpb.Entry{Index: 1, Term: 1, Type: raftpb.EntryType_ENTRY_TYPE_CONFIGURATION, Data: c.Encode()}
	appendSync(t, m, []*raftpb.Entry{e})
	appendSync(t, m, ents(2, 3, 1))
	// Reopen over the same storage without closing it.
	m2, err := New(Options{Storage: s})
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	if got := m2.Configuration(); got.Index != 1 || !got.Conf.Equal(c) {
		t.Fatalf("reloaded configuration %+v", got)
	}
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
}
