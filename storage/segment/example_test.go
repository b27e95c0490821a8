package segment_test

import (
	"fmt"

	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/storage/segment"
	"github.com/graft-raft/graft/vfs"
)

func ExampleOpen() {
	mem := vfs.NewMem() // vfs.Default for the real disk
	log, err := segment.Open(mem, "/raft/log", segment.Options{})
	if err != nil {
		panic(err)
	}
	err = log.Append([]*raftpb.Entry{
		{Term: 1, Index: 1, Data: []byte("x=1")},
		{Term: 1, Index: 2, Data: []byte("y=2")},
	})
	if err != nil {
		panic(err)
	}

	mem.Crash() // Append is durable once it returns
	log.Close()

	log, err = segment.Open(mem, "/raft/log", segment.Options{})
	if err != nil {
		panic(err)
	}
	defer log.Close()
	ents, _ := log.Entries(log.FirstIndex(), log.LastIndex()+1, 0)
	for _, e := range ents {
		fmt.Printf("%d/%d %s\n", e.Index, e.Term, e.Data)
	}
	// Output:
	// 1/1 x=1
	// 2/1 y=2
}
