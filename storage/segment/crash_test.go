package segment

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/graft-raft/graft/storage"
	"github.com/graft-raft/graft/vfs"
)

// step is one mutation of a workload, with its effect on the model.
type step struct {
	name  string
	kind  string // append, suffix, prefix or reset
	arg   uint64
	apply func(l *Log) error
	model func(m *model)
}

func appendStep(lo, hi, term uint64) step {
	return step{
		name:  fmt.Sprintf("Append[%d,%d)t%d", lo, hi, term),
		kind:  "append",
		apply: func(l *Log) error { return l.Append(ents(lo, hi, term)) },
		model: func(m *model) { m.append(ents(lo, hi, term)) },
	}
}

func suffixStep(k uint64) step {
	return step{name: fmt.Sprintf("TruncateSuffix(%d)", k), kind: "suffix", arg: k,
		apply: func(l *Log) error { return l.TruncateSuffix(k) },
		model: func(m *model) { m.truncateSuffix(k) }}
}

func prefixStep(f uint64) step {
	return step{name: fmt.Sprintf("TruncatePrefix(%d)", f), kind: "prefix", arg: f,
		apply: func(l *Log) error { return l.TruncatePrefix(f) },
		model: func(m *model) { m.truncatePrefix(f) }}
}

func resetStep(n uint64) step {
	return step{name: fmt.Sprintf("Reset(%d)", n), kind: "reset", arg: n,
		apply: func(l *Log) error { return l.Reset(n) },
		model: func(m *model) { m.reset(n) }}
}

// workload exercises roll-over, every truncation, and reopening of closed
// segments, with a 120-byte segment size.
var workload = []step{
	appendStep(1, 6, 1),
	appendStep(6, 13, 1),
	appendStep(13, 21, 1),
	suffixStep(15),
	appendStep(16, 26, 2),
	prefixStep(8),
	appendStep(26, 31, 2),
	suffixStep(9),
	appendStep(10, 14, 3),
	prefixStep(40),
	appendStep(40, 46, 3),
	resetStep(100),
	appendStep(100, 111, 4),
	prefixStep(104),
	resetStep(102),
	appendStep(102, 106, 5),
	suffixStep(0),
	appendStep(102, 104, 6),
}

const workloadSegSize = 120

func isPrefix(short, long model) bool {
	return short.first == long.first && len(short.terms) <= len(long.terms) &&
		slices.Equal(short.terms, long.terms[:len(short.terms)])
}

func equal(a, b model) bool {
	return a.first == b.first && slices.Equal(a.terms, b.terms)
}

// acceptable reports whether got is a state the log may recover to after
// a crash or failure during s, which takes before to after.
func acceptable(got, before, after model, s step) bool {
	if equal(got, before) || equal(got, after) {
		return true
	}
	switch s.kind {
	case "suffix":
		// Some of the removed suffix may survive.
		return isPrefix(got, before) && got.last() >= after.last()
	case "reset":
		// Entries at or after the new start may be partly removed
		// before the marker is written.
		keep := max(s.arg-1, before.first-1)
		return isPrefix(got, before) && got.last() >= min(before.last(), keep)
	}
	return false
}

// readModel reads the whole of l into a model.
func readModel(t *testing.T, l *Log) model {
	t.Helper()
	m := model{first: l.FirstIndex()}
	es, err := l.Entries(m.first, l.LastIndex()+1, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		m.terms = append(m.terms, e.Term)
	}
	check(t, l, m) // also checks data, types and Term
	return m
}

// runWorkload runs the workload on fsys until a step fails. It returns
// the model before the failed step and that step's index, or
// len(workload) if none failed; -1 means Open failed.
func runWorkload(t *testing.T, fsys vfs.FS, workload []step) (before model, failed int, err error) {
	m := model{first: 1}
	l, err := Open(fsys, dir, Options{SegmentSize: workloadSegSize})
	if err != nil {
		return m, -1, err
	}
	defer l.Close()
	for i, s := range workload {
		if err := s.apply(l); err != nil {
			return m, i, err
		}
		s.model(&m)
	}
	return m, len(workload), nil
}

// countOps returns how many filesystem operations the workload performs.
func countOps(t *testing.T, workload []step) int {
	n := 0
	fsys := vfs.WithInjector(vfs.NewMem(), vfs.InjectorFunc(func(vfs.Op, string) error {
		n++
		return nil
	}))
	if _, failed, err := runWorkload(t, fsys, workload); err != nil || failed != len(workload) {
		t.Fatalf("workload failed at step %d: %v", failed, err)
	}
	return n
}

// TestCrashAtEveryOperation crashes the MemFS at each filesystem operation
// of the workload in turn and checks that the log reopens to a state that
// keeps every acknowledged change, and stays usable.
func TestCrashAtEveryOperation(t *testing.T) {
	total := countOps(t, workload)
	t.Logf("workload performs %d filesystem operations", total)
	for n := 1; n <= total; n++ {
		crashAt(t, workload, n, fmt.Sprintf("crash at op %d", n))
	}
}

// crashAt runs workload, crashing the MemFS at its nth filesystem
// operation, and checks recovery.
func crashAt(t *testing.T, workload []step, n int, what string) {
	t.Helper()
	{
		mem := vfs.NewMem()
		count, crashed := 0, false
		fsys := vfs.WithInjector(mem, vfs.InjectorFunc(func(op vfs.Op, path string) error {
			count++
			if count == n {
				mem.Crash()
				crashed = true
			}
			if crashed {
				return fmt.Errorf("crashed before %s %s: %w", op, path, vfs.ErrInjected)
			}
			return nil
		}))
		before, failed, err := runWorkload(t, fsys, workload)
		if !crashed || !errors.Is(err, vfs.ErrInjected) {
			t.Fatalf("%s: workload ended at step %d with %v", what, failed, err)
		}
		verifyRecovery(t, mem, workload, before, failed, what)
	}
}

// TestFailEveryOperation fails each filesystem operation of the workload
// in turn (without crashing) and checks that the error is reported, that
// the log is either still usable or refuses mutations with ErrClosed, and
// that it reopens to an acceptable state.
func TestFailEveryOperation(t *testing.T) {
	total := countOps(t, workload)
	for n := 1; n <= total; n++ {
		mem := vfs.NewMem()
		count := 0
		fsys := vfs.WithInjector(mem, vfs.InjectorFunc(func(op vfs.Op, path string) error {
			count++
			if count == n {
				return fmt.Errorf("%s %s: %w", op, path, vfs.ErrInjected)
			}
			return nil
		}))
		m := model{first: 1}
		l, err := Open(fsys, dir, Options{SegmentSize: workloadSegSize})
		if err != nil {
			if !errors.Is(err, vfs.ErrInjected) {
				t.Fatalf("fail op %d: Open = %v", n, err)
			}
			verifyRecovery(t, mem, workload, m, -1, fmt.Sprintf("fail op %d", n))
			continue
		}
		failed := len(workload)
		for i, s := range workload {
			if err := s.apply(l); err != nil {
				if !errors.Is(err, vfs.ErrInjected) {
					t.Fatalf("fail op %d: %s = %v", n, s.name, err)
				}
				failed = i
				break
			}
			s.model(&m)
		}
		if failed == len(workload) {
			l.Close()
			continue // the failed operation was a read that nothing needed
		}
		s := workload[failed]
		after := m
		s.model(&after)
		// Either the log refuses further changes, or it is exactly as
		// before the failed step and still works.
		if err := l.Append(ents(l.LastIndex()+1, l.LastIndex()+2, 9)); err != nil {
			if !errors.Is(err, storage.ErrClosed) || !errors.Is(err, vfs.ErrInjected) {
				t.Fatalf("fail op %d in %s: next Append = %v, want ErrClosed wrapping the cause", n, s.name, err)
			}
		} else {
			m9 := m
			m9.append(ents(m.last()+1, m.last()+2, 9))
			got := readModel(t, l)
			if !equal(got, m9) {
				t.Fatalf("fail op %d in %s: usable log holds %v, want %v", n, s.name, got, m9)
			}
			l.Close()
			l2 := mustOpen(t, mem, Options{SegmentSize: workloadSegSize})
			if got := readModel(t, l2); !equal(got, m9) {
				t.Fatalf("fail op %d in %s: reopened log holds %v, want %v", n, s.name, got, m9)
			}
			l2.Close()
			continue
		}
		l.Close()
		verifyRecovery(t, mem, workload, m, failed, fmt.Sprintf("fail op %d", n))
	}
}

// verifyRecovery reopens the log in mem and checks it holds a state
// acceptable after step failed was interrupted, then appends to it.
func verifyRecovery(t *testing.T, mem *vfs.MemFS, workload []step, before model, failed int, what string) {
	t.Helper()
	l, err := Open(mem, dir, Options{SegmentSize: workloadSegSize})
	if err != nil {
		t.Fatalf("%s (step %d): reopen: %v", what, failed, err)
	}
	defer l.Close()
	got := readModel(t, l)
	if failed >= 0 {
		s := workload[failed]
		after := before
		s.model(&after)
		if !acceptable(got, before, after, s) {
			t.Fatalf("%s during %s: recovered %v; before %v, after %v", what, s.name, got, before, after)
		}
	} else if !equal(got, before) {
		t.Fatalf("%s during Open: recovered %v, want %v", what, got, before)
	}
	es := ents(got.last()+1, got.last()+3, 7)
	if err := l.Append(es); err != nil {
		t.Fatalf("%s: append after recovery: %v", what, err)
	}
	got.append(es)
	check(t, l, got)
}

func TestCrashAfterAppendKeepsEntries(t *testing.T) {
	mem := vfs.NewMem()
	m := model{first: 1}
	for round := range 5 {
		l := mustOpen(t, mem, testOptions(t, 300))
		for range 4 {
			es := ents(m.last()+1, m.last()+1+uint64(round+1), uint64(round+1))
			mustAppend(t, l, es)
			m.append(es)
		}
		mem.Crash()
		l.Close()
		l = mustOpen(t, mem, testOptions(t, 300))
		check(t, l, m)
		l.Close()
	}
}

func TestDiskFull(t *testing.T) {
	var disk vfs.DiskFull
	mem := vfs.NewMem()
	fsys := vfs.WithInjector(mem, &disk)
	l := mustOpen(t, fsys, testOptions(t, 200))
	m := model{first: 1}

	disk.SetFull(true) // no room for the first segment
	if err := l.Append(ents(1, 3, 1)); !errors.Is(err, vfs.ErrInjected) {
		t.Fatalf("Append on a full disk = %v", err)
	}
	disk.SetFull(false)
	for i := uint64(1); i < 40; i += 4 {
		es := ents(i, i+4, 1)
		mustAppend(t, l, es)
		m.append(es)
		disk.SetFull(true) // no room for the next write
		err := l.Append(ents(i+4, i+5, 1))
		if !errors.Is(err, vfs.ErrInjected) {
			t.Fatalf("Append on a full disk = %v", err)
		}
		disk.SetFull(false)
		check(t, l, m)
	}
	l.Close()
	l = mustOpen(t, mem, testOptions(t, 200))
	check(t, l, m)
}

func TestSyncFailureIsSticky(t *testing.T) {
	mem := vfs.NewMem()
	var failSync bool
	fsys := vfs.WithInjector(mem, vfs.FailIf(func(op vfs.Op, _ string) bool { return failSync && op == vfs.OpSync }))
	l := mustOpen(t, fsys, testOptions(t, 0))
	mustAppend(t, l, ents(1, 5, 1))
	failSync = true
	if err := l.Append(ents(5, 7, 1)); !errors.Is(err, vfs.ErrInjected) {
		t.Fatalf("Append with failing fsync = %v", err)
	}
	failSync = false
	for name, err := range map[string]error{
		"Append":         l.Append(ents(5, 7, 1)),
		"TruncateSuffix": l.TruncateSuffix(2),
		"TruncatePrefix": l.TruncatePrefix(2),
		"Reset":          l.Reset(3),
	} {
		if !errors.Is(err, storage.ErrClosed) || !errors.Is(err, vfs.ErrInjected) {
			t.Errorf("%s after failed fsync = %v, want ErrClosed wrapping the cause", name, err)
		}
	}
	// Durable entries stay readable.
	check(t, l, model{first: 1, terms: []uint64{1, 1, 1, 1}})
}

// randomWorkload returns n random steps that are valid in sequence.
func randomWorkload(rng *rand.Rand, n int) []step {
	m := model{first: 1}
	var out []step
	term := uint64(1)
	for len(out) < n {
		pick := func() uint64 { return uint64(max(1, int64(m.first)+int64(rng.IntN(int(m.last()+5-m.first)))-2)) }
		var s step
		switch r := rng.IntN(10); {
		case r < 5:
			if rng.IntN(4) == 0 {
				term++
			}
			s = appendStep(m.last()+1, m.last()+2+uint64(rng.IntN(8)), term)
		case r < 7:
			s = suffixStep(pick())
		case r < 9:
			s = prefixStep(pick())
		default:
			s = resetStep(pick())
		}
		s.model(&m)
		out = append(out, s)
	}
	return out
}

// TestCrashRandomWorkloads crashes random workloads at random operations.
func TestCrashRandomWorkloads(t *testing.T) {
	for seed := uint64(1); seed <= 30; seed++ {
		rng := rand.New(rand.NewPCG(seed, 0))
		w := randomWorkload(rng, 25)
		total := countOps(t, w)
		for range 10 {
			n := 1 + rng.IntN(total)
			crashAt(t, w, n, fmt.Sprintf("seed %d: crash at op %d of %d", seed, n, total))
		}
	}
}
