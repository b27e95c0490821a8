package grpctransport

import (
	"context"
	"net"
	"testing"

	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/transport"
)

// benchServer starts a Server whose handler answers at once.
func benchServer(b *testing.B) string {
	b.Helper()
	router := transport.NewRouter()
	if err := router.Register("g1", "n1", &fakeHandler{}); err != nil {
		b.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := NewServer(router)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	b.Cleanup(func() {
		srv.Stop()
		<-served
	})
	return lis.Addr().String()
}

// BenchmarkPipeline streams AppendEntries of 64 entries of 256 B each
// through one pipeline, sending and receiving concurrently.
func BenchmarkPipeline(b *testing.B) {
	const batch, size = 64, 256
	addr := benchServer(b)
	tr := New(DefaultOptions())
	defer tr.Close()
	p, err := tr.Pipeline(context.Background(), addr)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	req := &raftpb.AppendEntriesRequest{GroupId: "g1", PeerId: "n1", Term: 1, Entries: entries(batch, size, 1)}
	// Warm up the connection.
	if err := p.Send(req); err != nil {
		b.Fatal(err)
	}
	if _, err := p.Recv(); err != nil {
		b.Fatal(err)
	}

	b.SetBytes(batch * size)
	b.ReportAllocs()
	b.ResetTimer()
	sendErr := make(chan error, 1)
	go func() {
		for range b.N {
			if err := p.Send(req); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- nil
	}()
	for range b.N {
		if _, err := p.Recv(); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-sendErr; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "entries/s")
}

// BenchmarkUnary measures one RequestVote round trip at a time.
func BenchmarkUnary(b *testing.B) {
	addr := benchServer(b)
	tr := New(DefaultOptions())
	defer tr.Close()
	ctx := context.Background()
	req := &raftpb.RequestVoteRequest{GroupId: "g1", ServerId: "n2", PeerId: "n1", Term: 1}
	if _, err := tr.RequestVote(ctx, addr, req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := tr.RequestVote(ctx, addr, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUnaryParallel measures RequestVote round trips from
// GOMAXPROCS goroutines sharing one connection.
func BenchmarkUnaryParallel(b *testing.B) {
	addr := benchServer(b)
	tr := New(DefaultOptions())
	defer tr.Close()
	ctx := context.Background()
	req := &raftpb.RequestVoteRequest{GroupId: "g1", ServerId: "n2", PeerId: "n1", Term: 1}
	if _, err := tr.RequestVote(ctx, addr, req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := tr.RequestVote(ctx, addr, req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
