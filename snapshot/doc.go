// Package snapshot keeps a raft group's snapshots on disk and moves them
// between peers: local storage with reference counts (Storage, Writer,
// Reader), the leader-side file server (FileService) and the
// follower-side downloader (Copy).
//
// # On disk
//
// A group's snapshot directory holds at most one complete snapshot in
// use plus the older ones still open, and a work area:
//
//	snap/
//	  temp/                           a save or download in progress
//	  snapshot_00000000000000001234/  a complete snapshot (index 1234)
//	    __raft_snapshot_meta          SnapshotMetaTable, framed: length, CRC-32C
//	    ...                           the state machine's files
//
// The meta table holds the snapshot's SnapshotMeta (index, term, peers,
// old peers, learners) and, for every file, its name, size, SHA-256 (its
// identity), CRC-32C (what installs and restarts check) and optional user
// data. File names are slash-separated, relative, clean,
// and never escape the directory; symlinks are refused.
//
// # Saving
//
// The state machine writes files into a Writer's directory and registers
// them; Close makes the snapshot durable and the newest in one step that
// either fully happens or leaves the previous snapshot in place:
//
//	s, err := snapshot.Open(dir, snapshot.Options{})
//	w, err := s.Create()
//	// write w.Path()/data ...
//	err = w.AddFile("data", nil)
//	w.SetMeta(&raftpb.SnapshotMeta{LastIncludedIndex: 1234, LastIncludedTerm: 5, Peers: peers})
//	err = w.Close() // sync files, write meta, rename temp/ → snapshot_…1234/, sync dir
//
// # Reading and references
//
// Storage.Open returns a Reader of the newest snapshot; while it is open
// the snapshot's directory stays on disk even if a newer snapshot
// replaces it, and it is deleted when the last Reader closes. Reader.Ref
// hands another reference to a second owner, such as the FileService.
//
// # Installing on a follower
//
// The leader registers a Reader with the process's FileService and sends
// the returned URI in InstallSnapshot. The follower calls Copy, which
// fetches the meta table, hard-links the files its own newest snapshot
// already has, keeps the files an interrupted Copy already completed, and
// downloads the rest in parallel, chunk by chunk, verifying every file's
// checksum before it counts:
//
//	uri, id := files.Register(reader.Ref(), myAddr) // leader
//	...
//	r, err := snapshot.Copy(ctx, s, uri, req.Meta, snapshot.CopyOptions{Transport: tr}) // follower
//	defer r.Close()
//	// load the state machine from r
//
// Cancelling ctx ends the Copy with ErrInterrupted and keeps temp/ and its
// progress record, so the next Copy — even after a restart — resumes with
// the files already complete. Bandwidth on both sides is limited with a
// shared throttle.Throttle.
//
// All exported types are safe for concurrent use.
package snapshot
