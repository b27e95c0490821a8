package main

// Where a graft follower's install time goes: the child wraps its
// snapshot store's filesystem and its transport's GetFile with clocks.

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/transport"
	"github.com/graft-raft/graft/vfs"
)

// snapIOTimes are summed over all goroutines (the copier fetches several
// files at once, so the sums can exceed the wall time).
type snapIOTimes struct {
	getFile, write, sync    atomic.Int64 // nanoseconds
	getFiles, writes, syncs atomic.Int64 // calls
}

func (t *snapIOTimes) add(d, n *atomic.Int64, t0 time.Time) {
	d.Add(int64(time.Since(t0)))
	n.Add(1)
}

// timedTransport times GetFile calls.
type timedTransport struct {
	transport.Transport
	t *snapIOTimes
}

func (tt timedTransport) GetFile(ctx context.Context, addr string, req *raftpb.GetFileRequest) (*raftpb.GetFileResponse, error) {
	defer tt.t.add(&tt.t.getFile, &tt.t.getFiles, time.Now())
	return tt.Transport.GetFile(ctx, addr, req)
}

// timedFS times the writes and syncs of the files it creates or opens.
type timedFS struct {
	vfs.FS
	t *snapIOTimes
}

func (f timedFS) Create(name string) (vfs.File, error) {
	file, err := f.FS.Create(name)
	if err != nil {
		return nil, err
	}
	return timedFile{file, f.t}, nil
}

func (f timedFS) OpenRW(name string) (vfs.File, error) {
	file, err := f.FS.OpenRW(name)
	if err != nil {
		return nil, err
	}
	return timedFile{file, f.t}, nil
}

type timedFile struct {
	vfs.File
	t *snapIOTimes
}

// Unwrap lets the copier's write-behind (vfs.StartWriteback) reach the
// file.
func (f timedFile) Unwrap() vfs.File { return f.File }

func (f timedFile) Write(p []byte) (int, error) {
	defer f.t.add(&f.t.write, &f.t.writes, time.Now())
	return f.File.Write(p)
}

func (f timedFile) WriteAt(p []byte, off int64) (int, error) {
	defer f.t.add(&f.t.write, &f.t.writes, time.Now())
	return f.File.WriteAt(p, off)
}

func (f timedFile) Sync() error {
	defer f.t.add(&f.t.sync, &f.t.syncs, time.Now())
	return f.File.Sync()
}
