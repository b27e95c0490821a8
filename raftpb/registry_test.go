package raftpb_test

import (
	"testing"

	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/graft-raft/graft/raftpb"
)

// graft's proto files are registered under names of their own, so that a
// binary may also link other raft.proto files (etcd's raft registers
// "raft.proto"): protobuf-go refuses two files of one name.
func TestProtoFileNamesAreQualified(t *testing.T) {
	for _, name := range []string{"graft/raftpb/raft.proto", "graft/raftpb/file_service.proto", "graft/raftpb/snapshot.proto"} {
		if _, err := protoregistry.GlobalFiles.FindFileByPath(name); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if got := raftpb.File_graft_raftpb_raft_proto.Path(); got != "graft/raftpb/raft.proto" {
		t.Errorf("raft.proto registered as %q", got)
	}
}
