package snapshot_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/snapshot"
	"github.com/graft-raft/graft/transport"
	"github.com/graft-raft/graft/transport/memory"
	"github.com/graft-raft/graft/vfs"
)

func Example() {
	dir, _ := os.MkdirTemp("", "snap")
	defer os.RemoveAll(dir)
	s, err := snapshot.Open(dir, snapshot.Options{})
	if err != nil {
		panic(err)
	}
	defer s.Close()

	// Save: write files into the writer's directory and register them.
	w, err := s.Create()
	if err != nil {
		panic(err)
	}
	_ = os.WriteFile(filepath.Join(w.Path(), "state"), []byte("x=1"), 0o644)
	if err := w.AddFile("state", []byte("format v1")); err != nil {
		panic(err)
	}
	w.SetMeta(&raftpb.SnapshotMeta{LastIncludedIndex: 100, LastIncludedTerm: 2, Peers: []string{"a:1", "b:1", "c:1"}})
	if err := w.Close(); err != nil {
		panic(err)
	}

	// Load: open the newest snapshot.
	r, err := s.Open()
	if err != nil {
		panic(err)
	}
	defer r.Close()
	um, _ := r.FileMeta("state")
	fmt.Println(r.Meta().GetLastIncludedIndex(), r.Files(), string(um))
	// Output: 100 [state] format v1
}

func ExampleCopy() {
	net := memory.NewNetwork(1)
	defer net.Close()

	// The leader process: a storage with a snapshot, and a FileService.
	leaderFS := vfs.NewMem()
	leader, _ := snapshot.Open("/leader", snapshot.Options{FS: leaderFS})
	w, _ := leader.Create()
	f, _ := leaderFS.Create(filepath.Join(w.Path(), "state"))
	_, _ = f.Write([]byte("x=1 y=2"))
	_ = f.Close()
	_ = w.AddFile("state", nil)
	w.SetMeta(&raftpb.SnapshotMeta{LastIncludedIndex: 100, LastIncludedTerm: 2})
	if err := w.Close(); err != nil {
		panic(err)
	}
	files := snapshot.NewFileService(snapshot.FileServiceOptions{})
	defer files.Close()
	router := transport.NewRouter()
	router.SetFileHandler(files)
	_, _ = net.Listen("leader:1", router)

	r, _ := leader.Open()
	meta := r.Meta()
	uri, _ := files.Register(r, "leader:1") // the service now owns r

	// The follower process downloads it.
	follower, _ := snapshot.Open("/follower", snapshot.Options{FS: vfs.NewMem()})
	tr := net.Transport("follower:1")
	defer tr.Close()
	var progress snapshot.Progress
	got, err := snapshot.Copy(context.Background(), follower, uri, meta, snapshot.CopyOptions{Transport: tr, Progress: &progress})
	if err != nil {
		panic(err)
	}
	defer got.Close()
	p := progress.Snapshot()
	fmt.Println(got.Meta().GetLastIncludedIndex(), got.Files(), p.FilesDone, p.BytesFetched)
	// Output: 100 [state] 1 7
}
