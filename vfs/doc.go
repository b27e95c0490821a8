// Package vfs is the small filesystem interface under all of graft's disk
// access, so that tests can inject I/O errors and simulate crashes that lose
// unsynced writes.
//
// Three implementations are provided:
//
//   - Default is the operating system's filesystem.
//   - MemFS (NewMem) is an in-memory filesystem that models durability:
//     file contents become durable only when the file is synced, and
//     directory entries (create, rename, remove, link, mkdir) only when the
//     parent directory, opened with OpenDir, is synced. Crash throws away
//     everything that was not durable, as a power failure would.
//   - WithInjector wraps any FS and asks an Injector before every operation
//     whether to fail it; FailIf and DiskFull are ready-made injectors.
//
// The helpers SyncDir, MkdirAllDurable and WriteFileAtomic implement the
// durable-file recipe every graft storage package follows: write a
// temporary file, sync it, rename it over the target, sync the directory.
//
// A typical crash test:
//
//	mem := vfs.NewMem()
//	log, _ := segment.Open(mem, "/data", segment.Options{})
//	_ = log.Append(entries) // durable once it returns
//	mem.Crash()             // lose everything not synced
//	log, _ = segment.Open(mem, "/data", segment.Options{})
//	// entries are still there
package vfs
