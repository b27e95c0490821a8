// Package memory implements storage.LogStorage and storage.MetaStorage in
// memory, for tests and examples. Nothing survives the process; otherwise
// the semantics are those of the durable implementations (segment and
// metafile), including TruncatePrefix past the last index and Reset.
//
//	log := memory.NewLog()
//	_ = log.Append([]*raftpb.Entry{{Term: 1, Index: 1}})
//	ents, _ := log.Entries(1, 2, 0)
//
//	meta := memory.NewMeta()
//	_ = meta.Save(1, "peer-a")
package memory
