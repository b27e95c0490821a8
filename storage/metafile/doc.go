// Package metafile keeps a node's current term and vote in one small file,
// raft_meta, implementing storage.MetaStorage.
//
// The file holds one frame: a 4-byte little-endian payload length, the
// 4-byte CRC-32C (Castagnoli) of the payload, and the payload: a version
// byte (1), the term as an unsigned varint, and the voted-for peer's
// bytes. Save replaces the file atomically (write raft_meta.tmp, fsync,
// rename, fsync the directory), so after a crash the file holds either
// the old or the new state. A file that fails its checksum or does not
// decode is reported as storage.ErrCorrupt: a node must never forget a
// vote, so it is never silently treated as empty.
//
// Example:
//
//	meta, err := metafile.Open(vfs.Default, "/var/lib/app/raft")
//	if err != nil {
//		return err
//	}
//	defer meta.Close()
//	term, votedFor, err := meta.Load()
//	...
//	err = meta.Save(term+1, self) // durable when it returns
package metafile
