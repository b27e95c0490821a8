package grpctransport

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/graft-raft/graft/raftpb"
)

// split cuts b into pieces of at most n bytes, as gRPC hands a message
// over in the frames it arrived in.
func split(b []byte, n int) mem.BufferSlice {
	var s mem.BufferSlice
	for len(b) > 0 {
		k := min(n, len(b))
		s = append(s, mem.SliceBuffer(b[:k]))
		b = b[k:]
	}
	return s
}

func sameGetFile(a, b *raftpb.GetFileResponse) bool {
	return a.GetEof() == b.GetEof() && a.GetReadSize() == b.GetReadSize() && bytes.Equal(a.GetData(), b.GetData())
}

// The server codec's output is the protobuf encoding of the response, and
// the client codec decodes it, whatever the frame boundaries.
func TestGetFileCodecsRoundTrip(t *testing.T) {
	data := make([]byte, 3<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	for _, resp := range []*raftpb.GetFileResponse{
		{},
		{Eof: true},
		{ReadSize: 5, Data: []byte("hello")},
		{Eof: true, ReadSize: int64(len(data)), Data: data},
	} {
		enc, err := newServerCodec().Marshal(resp)
		if err != nil {
			t.Fatal(err)
		}
		wire := enc.Materialize()
		enc.Free()
		var viaProto raftpb.GetFileResponse
		if err := proto.Unmarshal(wire, &viaProto); err != nil || !sameGetFile(&viaProto, resp) {
			t.Fatalf("proto.Unmarshal of the server codec's %d bytes: %v, data equal %v", len(wire), err, sameGetFile(&viaProto, resp))
		}
		for _, frame := range []int{1, 7, 16 << 10, len(wire) + 1} {
			var got raftpb.GetFileResponse
			if err := newClientCodec().Unmarshal(split(wire, frame), &got); err != nil {
				t.Fatalf("client codec, %d-byte frames: %v", frame, err)
			}
			if !sameGetFile(&got, &viaProto) {
				t.Fatalf("client codec, %d-byte frames: eof %v read_size %d, %d bytes; want %v %d %d",
					frame, got.GetEof(), got.GetReadSize(), len(got.GetData()), resp.GetEof(), resp.GetReadSize(), len(resp.GetData()))
			}
		}
	}
}

// Other messages go through the protobuf codec unchanged.
func TestCodecsPassOtherMessages(t *testing.T) {
	req := &raftpb.GetFileRequest{ReaderId: 9, Filename: "a", Count: 10, Offset: 3, ReadPartly: true}
	enc, err := newServerCodec().Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	var got raftpb.GetFileRequest
	if err := newClientCodec().Unmarshal(enc, &got); err != nil || !proto.Equal(&got, req) {
		t.Fatalf("round trip of a GetFileRequest: %v, %v", &got, err)
	}
}

// FuzzDecodeGetFile checks the client codec's decoder against
// proto.Unmarshal on any input: the same error or the same message.
func FuzzDecodeGetFile(f *testing.F) {
	for _, m := range []*raftpb.GetFileResponse{
		{}, {Eof: true}, {ReadSize: 3, Data: []byte("abc")}, {Eof: true, ReadSize: -1, Data: []byte{}},
	} {
		b, _ := proto.Marshal(m)
		f.Add(b, uint8(3))
	}
	f.Add([]byte{0x1a, 0x05, 'a'}, uint8(1))                    // data shorter than its length
	f.Add([]byte{0x08, 0x01, 0x08, 0x00, 0x22, 0x00}, uint8(2)) // repeated eof, an unknown field
	f.Add([]byte{0x0b, 0x0c}, uint8(1))                         // a group
	f.Fuzz(func(t *testing.T, wire []byte, frame uint8) {
		var want, got raftpb.GetFileResponse
		werr := proto.Unmarshal(wire, &want)
		gerr := newClientCodec().Unmarshal(split(wire, int(frame)+1), &got)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("proto.Unmarshal: %v; client codec: %v", werr, gerr)
		}
		if werr == nil && !sameGetFile(&got, &want) {
			t.Fatalf("client codec decoded %v, proto %v", &got, &want)
		}
	})
}
