package segment

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/graft-raft/graft/internal/leakcheck"
	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/storage"
	"github.com/graft-raft/graft/vfs"
)

func TestMain(m *testing.M) {
	leakcheck.VerifyTestMain(m)
}

const dir = "/log"

// data is the payload of entry index in term: it names both, so a reader
// can check any entry it gets back.
func data(index, term uint64) []byte {
	b := fmt.Appendf(nil, "%d/%d/", index, term)
	return append(b, bytes.Repeat([]byte{'x'}, int(index%7)*3)...)
}

func ent(index, term uint64) *raftpb.Entry {
	return &raftpb.Entry{Index: index, Term: term, Type: raftpb.EntryType_ENTRY_TYPE_NORMAL, Data: data(index, term)}
}

// ents returns entries [lo, hi) in term.
func ents(lo, hi, term uint64) []*raftpb.Entry {
	var out []*raftpb.Entry
	for i := lo; i < hi; i++ {
		out = append(out, ent(i, term))
	}
	return out
}

func testOptions(t testing.TB, segSize int64) Options {
	return Options{SegmentSize: segSize, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))}
}

func mustOpen(t testing.TB, fsys vfs.FS, opts Options) *Log {
	t.Helper()
	l, err := Open(fsys, dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func mustAppend(t testing.TB, l *Log, es []*raftpb.Entry) {
	t.Helper()
	if err := l.Append(es); err != nil {
		t.Fatalf("Append [%d, %d]: %v", es[0].Index, es[len(es)-1].Index, err)
	}
}

// model is the expected content of a log.
type model struct {
	first uint64
	terms []uint64 // terms[i] is the term of entry first+i
}

func (m model) last() uint64 { return m.first + uint64(len(m.terms)) - 1 }

func (m *model) append(es []*raftpb.Entry) {
	for _, e := range es {
		m.terms = append(m.terms, e.Term)
	}
}

func (m *model) truncateSuffix(k uint64) {
	if k < m.first-1 {
		k = m.first - 1
	}
	if k < m.last() {
		m.terms = m.terms[:k+1-m.first]
	}
}

func (m *model) truncatePrefix(f uint64) {
	switch {
	case f <= m.first:
	case f > m.last():
		m.first, m.terms = f, nil
	default:
		m.terms = slices.Clone(m.terms[f-m.first:])
		m.first = f
	}
}

func (m *model) reset(n uint64) { m.first, m.terms = n, nil }

func (m model) String() string {
	return fmt.Sprintf("[%d, %d] terms %v", m.first, m.last(), m.terms)
}

// check verifies that l holds exactly m.
func check(t testing.TB, l *Log, m model) {
	t.Helper()
	if got := l.FirstIndex(); got != m.first {
		t.Fatalf("FirstIndex = %d, want %d (want %v)", got, m.first, m)
	}
	if got := l.LastIndex(); got != m.last() {
		t.Fatalf("LastIndex = %d, want %d (want %v)", got, m.last(), m)
	}
	got, err := l.Entries(m.first, m.last()+1, 0)
	if err != nil {
		t.Fatalf("Entries(%d, %d): %v", m.first, m.last()+1, err)
	}
	if len(got) != len(m.terms) {
		t.Fatalf("Entries returned %d entries, want %d", len(got), len(m.terms))
	}
	for i, e := range got {
		idx := m.first + uint64(i)
		if e.Index != idx || e.Term != m.terms[i] || !bytes.Equal(e.Data, data(idx, m.terms[i])) ||
			e.Type != raftpb.EntryType_ENTRY_TYPE_NORMAL {
			t.Fatalf("entry %d = %d/%d %q, want term %d", idx, e.Index, e.Term, e.Data, m.terms[i])
		}
		term, err := l.Term(idx)
		if err != nil || term != m.terms[i] {
			t.Fatalf("Term(%d) = %d, %v; want %d", idx, term, err, m.terms[i])
		}
	}
	if _, err := l.Term(m.first - 1); !errors.Is(err, storage.ErrOutOfRange) {
		t.Fatalf("Term(first-1) = %v, want ErrOutOfRange", err)
	}
	if _, err := l.Term(m.last() + 1); !errors.Is(err, storage.ErrOutOfRange) {
		t.Fatalf("Term(last+1) = %v, want ErrOutOfRange", err)
	}
}

func segmentFiles(t testing.TB, fsys vfs.FS) []string {
	t.Helper()
	names, err := fsys.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, "log_") {
			out = append(out, n)
		}
	}
	return out
}

func readAll(t testing.TB, fsys vfs.FS, name string) []byte {
	t.Helper()
	f, err := fsys.Open(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeFile replaces a file durably, bypassing the log.
func writeFile(t testing.TB, fsys vfs.FS, name string, b []byte) {
	t.Helper()
	if err := vfs.WriteFileAtomic(fsys, filepath.Join(dir, name), b); err != nil {
		t.Fatal(err)
	}
}
