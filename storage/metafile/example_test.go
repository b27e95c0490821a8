package metafile_test

import (
	"fmt"

	"github.com/graft-raft/graft/storage/metafile"
	"github.com/graft-raft/graft/vfs"
)

func ExampleOpen() {
	mem := vfs.NewMem()
	meta, err := metafile.Open(mem, "/raft")
	if err != nil {
		panic(err)
	}
	if err := meta.Save(5, "peer-b"); err != nil {
		panic(err)
	}
	meta.Close()
	mem.Crash()

	meta, err = metafile.Open(mem, "/raft")
	if err != nil {
		panic(err)
	}
	defer meta.Close()
	term, votedFor, _ := meta.Load()
	fmt.Println(term, votedFor)
	// Output: 5 peer-b
}
