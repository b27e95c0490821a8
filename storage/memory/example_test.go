package memory_test

import (
	"fmt"

	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/storage/memory"
)

func Example() {
	log := memory.NewLog()
	_ = log.Append([]*raftpb.Entry{
		{Term: 1, Index: 1, Data: []byte("a")},
		{Term: 1, Index: 2, Data: []byte("b")},
		{Term: 2, Index: 3, Data: []byte("c")},
	})
	_ = log.TruncatePrefix(2)
	ents, _ := log.Entries(2, 4, 0)
	for _, e := range ents {
		fmt.Printf("%d/%d %s\n", e.Index, e.Term, e.Data)
	}

	meta := memory.NewMeta()
	_ = meta.Save(2, "peer-a")
	term, vote, _ := meta.Load()
	fmt.Println(term, vote)
	// Output:
	// 2/1 b
	// 3/2 c
	// 2 peer-a
}
