package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// etcdWAL is the etcd harness's write-ahead log: the durable half of a
// node's raft storage (raft.MemoryStorage is the other half), written the
// way etcd's own wal package writes it, minus what the benchmark never
// exercises (snapshots, restarts, repair).
//
// The log is a sequence of segment files of etcdWALSegmentSize bytes,
// preallocated when created so that appends do not grow the file. Each
// Ready's HardState and entries become one write of framed records, then,
// if the Ready says MustSync, one fdatasync. A record is
//
//	length uint32 (of type and payload) | crc32c uint32 (of type and payload) | type byte | payload
//
// with a marshaled raftpb.Entry, HardState or Snapshot as its payload; a
// zero length (the preallocated zeros) marks the end of the log.
type etcdWAL struct {
	dir string
	f   *os.File
	seq int   // number of the current segment
	off int64 // where the next write goes in the current segment
	// segSize is the size segments are preallocated to (and cut at).
	segSize int64
	buf     []byte
	ctr     *counterSet
}

const etcdWALSegmentSize = 64 << 20 // as etcd's wal.SegmentSizeBytes

const (
	etcdRecEntry byte = iota + 1
	etcdRecState
	etcdRecSnapshot
)

const etcdRecHeader = 9

var etcdCRC = crc32.MakeTable(crc32.Castagnoli)

// openEtcdWAL creates a fresh log in dir (which must not hold one).
func openEtcdWAL(dir string, ctr *counterSet) (*etcdWAL, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	w := &etcdWAL{dir: dir, seq: -1, segSize: etcdWALSegmentSize, ctr: ctr}
	if err := w.cut(); err != nil {
		return nil, err
	}
	return w, nil
}

func etcdSegmentName(dir string, seq int) string {
	return filepath.Join(dir, fmt.Sprintf("%016x.wal", seq))
}

// cut syncs and closes the current segment, if any, and starts the next.
func (w *etcdWAL) cut() error {
	if w.f != nil {
		if err := syncData(w.f); err != nil {
			return err
		}
		if err := w.f.Close(); err != nil {
			return err
		}
		w.f = nil
	}
	f, err := os.OpenFile(etcdSegmentName(w.dir, w.seq+1), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if err := preallocate(f, w.segSize); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil { // the new size
		f.Close()
		return err
	}
	if err := syncDir(w.dir); err != nil { // the new name
		f.Close()
		return err
	}
	w.f, w.seq, w.off = f, w.seq+1, 0
	return nil
}

// appendRecord frames m as a record of type typ at the end of w.buf.
func (w *etcdWAL) appendRecord(typ byte, m proto.Message) error {
	start := len(w.buf)
	w.buf = append(w.buf, make([]byte, etcdRecHeader)...)
	var err error
	if w.buf, err = (proto.MarshalOptions{}).MarshalAppend(w.buf, m); err != nil {
		return err
	}
	w.buf[start+8] = typ
	body := w.buf[start+8:]
	binary.LittleEndian.PutUint32(w.buf[start:], uint32(len(body)))
	binary.LittleEndian.PutUint32(w.buf[start+4:], crc32.Checksum(body, etcdCRC))
	return nil
}

// save writes the entries, then the hard state if it is not empty, in one
// write, and fdatasyncs if sync. Writes carrying entries are counted.
func (w *etcdWAL) save(hs *pb.HardState, ents []*pb.Entry, sync bool) error {
	t0 := time.Now()
	w.buf = w.buf[:0]
	for _, e := range ents {
		if err := w.appendRecord(etcdRecEntry, e); err != nil {
			return err
		}
	}
	if hs != nil && (hs.GetTerm() != 0 || hs.GetVote() != 0 || hs.GetCommit() != 0) {
		if err := w.appendRecord(etcdRecState, hs); err != nil {
			return err
		}
	}
	if len(w.buf) == 0 {
		return nil
	}
	if err := w.write(w.buf, sync); err != nil {
		return err
	}
	if len(ents) > 0 {
		w.ctr.write(len(ents), t0)
	}
	return nil
}

// saveSnapshot writes a snapshot record (the harness writes one, the
// bootstrap configuration) and syncs.
func (w *etcdWAL) saveSnapshot(s *pb.Snapshot) error {
	w.buf = w.buf[:0]
	if err := w.appendRecord(etcdRecSnapshot, s); err != nil {
		return err
	}
	return w.write(w.buf, true)
}

func (w *etcdWAL) write(b []byte, sync bool) error {
	// A write that does not fit starts a new segment (a write larger than a
	// segment gets one of its own, grown beyond the preallocated size).
	if w.off > 0 && w.off+int64(len(b)) > w.segSize {
		if err := w.cut(); err != nil {
			return err
		}
	}
	if _, err := w.f.WriteAt(b, w.off); err != nil {
		return err
	}
	w.off += int64(len(b))
	if sync {
		return syncData(w.f)
	}
	return nil
}

func (w *etcdWAL) close() error {
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	return err
}

// etcdWALContents is what readEtcdWAL replays from a log.
type etcdWALContents struct {
	snapshot *pb.Snapshot
	state    *pb.HardState
	entries  []*pb.Entry
}

// readEtcdWAL replays the log in dir: the last snapshot and hard state, and
// the entries after the snapshot, a later entry at an index replacing the
// earlier one and everything after it, as a restarting node would see them.
func readEtcdWAL(dir string) (c etcdWALContents, err error) {
	for seq := 0; ; seq++ {
		b, err := os.ReadFile(etcdSegmentName(dir, seq))
		if errors.Is(err, os.ErrNotExist) && seq > 0 {
			return c, nil
		}
		if err != nil {
			return c, err
		}
		for len(b) >= etcdRecHeader {
			n := int(binary.LittleEndian.Uint32(b))
			if n == 0 {
				break
			}
			if n > len(b)-8 {
				return c, fmt.Errorf("%s: torn record: %w", etcdSegmentName(dir, seq), io.ErrUnexpectedEOF)
			}
			body := b[8 : 8+n]
			if crc32.Checksum(body, etcdCRC) != binary.LittleEndian.Uint32(b[4:]) {
				return c, fmt.Errorf("%s: record checksum mismatch", etcdSegmentName(dir, seq))
			}
			b = b[8+n:]
			switch body[0] {
			case etcdRecEntry:
				e := &pb.Entry{}
				if err := proto.Unmarshal(body[1:], e); err != nil {
					return c, err
				}
				if k := len(c.entries); k > 0 && c.entries[k-1].GetIndex() >= e.GetIndex() {
					// A new leader's entry replaces this index and the rest.
					c.entries = c.entries[:max(0, int(e.GetIndex())-int(c.entries[0].GetIndex()))]
				}
				c.entries = append(c.entries, e)
			case etcdRecState:
				c.state = &pb.HardState{}
				if err := proto.Unmarshal(body[1:], c.state); err != nil {
					return c, err
				}
			case etcdRecSnapshot:
				c.snapshot = &pb.Snapshot{}
				if err := proto.Unmarshal(body[1:], c.snapshot); err != nil {
					return c, err
				}
				c.entries = nil
			default:
				return c, fmt.Errorf("%s: unknown record type %d", etcdSegmentName(dir, seq), body[0])
			}
		}
	}
}

// syncData is fdatasync where the platform has it, fsync elsewhere.
func syncData(f *os.File) error {
	if fdatasync != nil {
		return fdatasync(f)
	}
	return f.Sync()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
