package memory

import (
	"context"
	"testing"

	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/transport"
)

// echoHandler answers every AppendEntries at once; other methods are not
// used.
type echoHandler struct{ transport.Handler }

func (echoHandler) HandleAppendEntries(req *raftpb.AppendEntriesRequest, done func(*raftpb.AppendEntriesResponse, error)) {
	done(echo(req), nil)
}

// BenchmarkPipeline streams AppendEntries of 64 entries of 256 B each
// through one fault-free pipeline, sending and receiving concurrently.
func BenchmarkPipeline(b *testing.B) {
	const batch, size = 64, 256
	net := NewNetwork(1)
	defer net.Close()
	r := transport.NewRouter()
	if err := r.Register("g", "n2", echoHandler{}); err != nil {
		b.Fatal(err)
	}
	if _, err := net.Listen("n2", r); err != nil {
		b.Fatal(err)
	}
	tr := net.Transport("n1")
	defer tr.Close()
	p, err := tr.Pipeline(context.Background(), "n2")
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	es := make([]*raftpb.Entry, batch)
	for i := range es {
		es[i] = &raftpb.Entry{Term: 1, Index: uint64(i + 1), Data: make([]byte, size)}
	}
	req := &raftpb.AppendEntriesRequest{GroupId: "g", PeerId: "n2", Term: 1, Entries: es}
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
}
