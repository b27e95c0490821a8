package memory_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/transport"
	"github.com/graft-raft/graft/transport/memory"
)

// voter grants every vote; a test registers its raft nodes instead.
type voter struct{ transport.Handler }

func (voter) HandleRequestVote(_ context.Context, req *raftpb.RequestVoteRequest) (*raftpb.RequestVoteResponse, error) {
	return &raftpb.RequestVoteResponse{Term: req.Term, Granted: true}, nil
}

func Example() {
	net := memory.NewNetwork(1)
	defer net.Close()

	// Process n2 hosts peer n2 of group "orders".
	router := transport.NewRouter()
	if err := router.Register("orders", "n2", voter{}); err != nil {
		panic(err)
	}
	if _, err := net.Listen("n2", router); err != nil {
		panic(err)
	}

	// Process n1 asks for its vote.
	tr := net.Transport("n1")
	defer tr.Close()
	req := &raftpb.RequestVoteRequest{GroupId: "orders", ServerId: "n1", PeerId: "n2", Term: 2}
	resp, err := tr.RequestVote(context.Background(), "n2", req)
	fmt.Println(resp.GetGranted(), err)

	// Cut them apart: the request is lost.
	net.Partition([]string{"n1"}, []string{"n2"})
	_, err = tr.RequestVote(context.Background(), "n2", req)
	fmt.Println(errors.Is(err, transport.ErrUnreachable), net.LinkStats("n1", "n2").Dropped)

	net.Heal()
	resp, err = tr.RequestVote(context.Background(), "n2", req)
	fmt.Println(resp.GetGranted(), err)
	// Output:
	// true <nil>
	// true 1
	// true <nil>
}
