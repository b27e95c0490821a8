package grpctransport_test

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/transport"
	grpctransport "github.com/graft-raft/graft/transport/grpc"
)

// voter grants every vote; a real process registers its raft nodes.
type voter struct{ transport.Handler }

func (voter) HandleRequestVote(_ context.Context, req *raftpb.RequestVoteRequest) (*raftpb.RequestVoteResponse, error) {
	return &raftpb.RequestVoteResponse{Term: req.Term, Granted: true}, nil
}

func Example() {
	// Server side: one Server per process, routing by (group, peer).
	router := transport.NewRouter()
	if err := router.Register("orders", "n1", voter{}); err != nil {
		panic(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	srv := grpctransport.NewServer(router)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	defer func() { srv.Stop(); <-served }()

	// Client side: one Transport per process, one connection per peer.
	tr := grpctransport.New(grpctransport.DefaultOptions())
	defer tr.Close()
	resp, err := tr.RequestVote(context.Background(), lis.Addr().String(), &raftpb.RequestVoteRequest{
		GroupId: "orders", ServerId: "n2", PeerId: "n1", Term: 3,
	})
	fmt.Println(resp.GetGranted(), resp.GetTerm(), err)

	_, err = tr.RequestVote(context.Background(), lis.Addr().String(), &raftpb.RequestVoteRequest{
		GroupId: "payments", ServerId: "n2", PeerId: "n1", Term: 3,
	})
	fmt.Println(errors.Is(err, transport.ErrUnknownGroup))
	// Output:
	// true 3 <nil>
	// true
}
