package metafile

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"path/filepath"
	"strings"
	"testing"

	"github.com/graft-raft/graft/internal/leakcheck"
	"github.com/graft-raft/graft/storage"
	"github.com/graft-raft/graft/vfs"
)

func TestMain(m *testing.M) {
	leakcheck.VerifyTestMain(m)
}

const dir = "/raft"

func mustOpen(t *testing.T, fsys vfs.FS) *Store {
	t.Helper()
	s, err := Open(fsys, dir)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func wantState(t *testing.T, s *Store, term uint64, vote string) {
	t.Helper()
	gotTerm, gotVote, err := s.Load()
	if err != nil || gotTerm != term || gotVote != vote {
		t.Fatalf("Load = %d, %q, %v; want %d, %q", gotTerm, gotVote, err, term, vote)
	}
}

func TestSaveLoad(t *testing.T) {
	for _, fsName := range []string{"mem", "os"} {
		t.Run(fsName, func(t *testing.T) {
			var fsys vfs.FS = vfs.NewMem()
			d := dir
			if fsName == "os" {
				fsys, d = vfs.Default, filepath.Join(t.TempDir(), "a", "b")
			}
			s, err := Open(fsys, d)
			if err != nil {
				t.Fatal(err)
			}
			wantState(t, s, 0, "")
			for _, st := range []struct {
				term uint64
				vote string
			}{{1, ""}, {1, "peer-a"}, {1 << 62, "ünïcode peer"}, {7, ""}} {
				if err := s.Save(st.term, st.vote); err != nil {
					t.Fatal(err)
				}
				wantState(t, s, st.term, st.vote)
				s.Close()
				if s, err = Open(fsys, d); err != nil {
					t.Fatal(err)
				}
				wantState(t, s, st.term, st.vote)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatalf("second Close = %v", err)
			}
			if _, _, err := s.Load(); !errors.Is(err, storage.ErrClosed) {
				t.Fatalf("Load after Close = %v", err)
			}
			if err := s.Save(1, "x"); !errors.Is(err, storage.ErrClosed) {
				t.Fatalf("Save after Close = %v", err)
			}
		})
	}
}

func TestCrashAfterSave(t *testing.T) {
	mem := vfs.NewMem()
	s := mustOpen(t, mem)
	if err := s.Save(3, "b"); err != nil {
		t.Fatal(err)
	}
	mem.Crash()
	wantState(t, mustOpen(t, mem), 3, "b")
}

// saveOps counts the filesystem operations of Open followed by Save on
// an existing store.
func saveOps(t *testing.T) int {
	mem := vfs.NewMem()
	old := mustOpen(t, mem)
	if err := old.Save(1, "old"); err != nil {
		t.Fatal(err)
	}
	n := 0
	fsys := vfs.WithInjector(mem, vfs.InjectorFunc(func(vfs.Op, string) error { n++; return nil }))
	s, err := Open(fsys, dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Save(2, "new"); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestCrashOrFailAtEveryStep crashes, or fails, each filesystem operation
// of Open plus Save in turn. The reopened store must hold the old state
// or the new one: never a mixture, never an error.
func TestCrashOrFailAtEveryStep(t *testing.T) {
	total := saveOps(t)
	for _, crash := range []bool{true, false} {
		for n := 1; n <= total; n++ {
			t.Run(fmt.Sprintf("crash=%v/op=%d", crash, n), func(t *testing.T) {
				mem := vfs.NewMem()
				old := mustOpen(t, mem)
				if err := old.Save(1, "old"); err != nil {
					t.Fatal(err)
				}
				old.Close()

				count, dead := 0, false
				fsys := vfs.WithInjector(mem, vfs.InjectorFunc(func(op vfs.Op, path string) error {
					count++
					if count == n {
						dead = true
						if crash {
							mem.Crash()
						}
						return fmt.Errorf("%s %s: %w", op, path, vfs.ErrInjected)
					}
					if dead && crash {
						return fmt.Errorf("after crash: %w", vfs.ErrInjected)
					}
					return nil
				}))
				saved := false
				s, err := Open(fsys, dir)
				if err == nil {
					err = s.Save(2, "new")
					saved = err == nil
					if !saved {
						// A failed Save leaves the cached state alone.
						wantState(t, s, 1, "old")
					}
					s.Close()
				}
				if err != nil && !errors.Is(err, vfs.ErrInjected) {
					t.Fatalf("error %v does not wrap the injected one", err)
				}
				if !dead {
					t.Fatal("the injected operation never ran")
				}

				s = mustOpen(t, mem)
				term, vote, err := s.Load()
				if err != nil {
					t.Fatal(err)
				}
				switch {
				case term == 2 && vote == "new":
				case term == 1 && vote == "old" && !saved:
				default:
					t.Fatalf("reopened store holds %d, %q (Save succeeded: %v)", term, vote, saved)
				}
				if _, err := mem.Stat(filepath.Join(dir, FileName+vfs.TempSuffix)); err == nil {
					t.Fatal("temporary file left after Open")
				}
			})
		}
	}
}

func TestCorrupt(t *testing.T) {
	good := encode(5, "peer")
	flip := func(i int) []byte { b := bytes.Clone(good); b[i] ^= 1; return b }
	for name, b := range map[string][]byte{
		"empty":           {},
		"short header":    good[:5],
		"truncated":       good[:len(good)-1],
		"trailing bytes":  append(bytes.Clone(good), 0),
		"bad checksum":    flip(5),
		"bad payload":     flip(len(good) - 1),
		"bad length":      flip(0),
		"unknown version": encodeRaw([]byte{2, 5}),
		"overlong varint": encodeRaw([]byte{1, 0x85, 0x00}),
		"no term":         encodeRaw([]byte{1}),
	} {
		t.Run(name, func(t *testing.T) {
			mem := vfs.NewMem()
			if err := vfs.MkdirAllDurable(mem, dir, 0o755); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, FileName)
			if err := vfs.WriteFileAtomic(mem, path, b); err != nil {
				t.Fatal(err)
			}
			s, err := Open(mem, dir)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, storage.ErrCorrupt) || !strings.Contains(err.Error(), path) {
				t.Fatalf("Open = %v, want ErrCorrupt naming %s", err, path)
			}
		})
	}
}

// encodeRaw frames an arbitrary payload.
func encodeRaw(payload []byte) []byte {
	b := make([]byte, headerSize, headerSize+len(payload))
	b = append(b, payload...)
	binary.LittleEndian.PutUint32(b, uint32(len(payload)))
	binary.LittleEndian.PutUint32(b[4:], crc32.Checksum(payload, crcTable))
	return b
}

func FuzzDecode(f *testing.F) {
	f.Add(encode(0, ""))
	f.Add(encode(1<<40, "peer-1"))
	f.Add([]byte{})
	f.Add(make([]byte, 12))
	f.Fuzz(func(t *testing.T, b []byte) {
		// b as a whole file, and b as the payload of a valid frame: the
		// checksum would make the fuzzer's payloads rare otherwise.
		checkDecode(t, b)
		checkDecode(t, encodeRaw(b))
	})
}

func checkDecode(t *testing.T, b []byte) {
	term, vote, _, err := decode(b)
	if err != nil {
		if !errors.Is(err, errFormat) {
			t.Fatalf("error %v does not wrap errFormat", err)
		}
		return
	}
	if re := encode(term, vote); !bytes.Equal(re, b) {
		t.Fatalf("re-encoding gives %x, want %x", re, b)
	}
}
