// Package segment is graft's durable log: a storage.LogStorage kept in a
// directory of segment files.
//
// # Files
//
// Entries are appended to one in-progress segment, named
// log_inprogress_<first index>. Once it grows past Options.SegmentSize it
// is closed: renamed to log_<first index>_<last index>, and the next
// Append starts a new in-progress segment. Indexes in names are 20
// decimal digits, so names sort in log order. A small file, first_index,
// records the log's first index after TruncatePrefix or Reset; it is
// replaced atomically (write a temporary file, fsync, rename, fsync the
// directory).
//
// Each entry is one frame: a 4-byte little-endian payload length, the
// 4-byte CRC-32C (Castagnoli) of the payload, and the payload: term,
// index and type as unsigned varints followed by the entry's data.
//
// # Durability
//
// Append writes a batch with one write and makes it durable before it
// returns. The in-progress segment keeps Options.Preallocate bytes of
// zeros written and synced after its last frame, so most batches overwrite
// allocated blocks without changing the file's size and need only
// fdatasync; a batch that outgrows the zeros writes the next ones too and
// fsyncs. Creating, closing, reopening and removing
// segments fsync the directory. TruncateSuffix and Reset are durable when
// they return; TruncatePrefix records the new first index durably but may
// leave files that Open deletes later.
//
// Open checks every frame. A torn tail of the in-progress segment (what a
// crash during an append leaves) is truncated and logged, and its zeros
// are cut; any other bad
// frame is reported as storage.ErrCorrupt with the file and offset, never
// skipped.
//
// # Memory and concurrency
//
// The Log keeps, per entry, the frame's offset and the entry's term, so
// Term needs no I/O and Entries reads a run of entries with one ReadAt.
// Readers run concurrently with each other and with Append: an appended
// batch becomes visible only after its fsync, and readers never wait for
// one.
//
// # Example
//
//	log, err := segment.Open(vfs.Default, "/var/lib/app/raft/log", segment.Options{})
//	if err != nil {
//		return err
//	}
//	defer log.Close()
//	err = log.Append([]*raftpb.Entry{{Term: 1, Index: log.LastIndex() + 1, Data: cmd}})
package segment
