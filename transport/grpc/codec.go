package grpctransport

import (
	"encoding/binary"
	"io"
	"math"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/transport"
)

// serverCodec is the Server's codec: gRPC's protobuf codec, except that a
// GetFileResponse's Data is sent without being copied into the marshalled
// message, and goes back to transport.RecycleChunk once gRPC has written
// it. A snapshot install sends gigabytes this way.
type serverCodec struct{ encoding.CodecV2 }

func newServerCodec() serverCodec {
	return serverCodec{encoding.GetCodecV2(proto.Name)}
}

// chunkRecycler is a mem.BufferPool that hands what gRPC frees back to
// transport.RecycleChunk.
type chunkRecycler struct{}

func (chunkRecycler) Get(n int) *[]byte {
	b := transport.ChunkBuffer(n)
	return &b
}

func (chunkRecycler) Put(b *[]byte) { transport.RecycleChunk(*b) }

// getFileDataField is GetFileResponse's field number of data.
const getFileDataField = 3

func (c serverCodec) Marshal(v any) (mem.BufferSlice, error) {
	resp, ok := v.(*raftpb.GetFileResponse)
	if !ok || len(resp.GetData()) == 0 {
		return c.CodecV2.Marshal(v)
	}
	// The fields before data, marshalled by the protobuf codec, then
	// data's tag and length, then data itself as a buffer of its own.
	head, err := c.CodecV2.Marshal(&raftpb.GetFileResponse{Eof: resp.GetEof(), ReadSize: resp.GetReadSize()})
	if err != nil {
		return nil, err
	}
	data := resp.GetData()
	var tag []byte
	tag = protowire.AppendTag(tag, getFileDataField, protowire.BytesType)
	tag = protowire.AppendVarint(tag, uint64(len(data)))
	return append(head, mem.SliceBuffer(tag), mem.NewBuffer(&data, chunkRecycler{})), nil
}

// clientCodec is the codec of the Transport's GetFile calls: gRPC's
// protobuf codec, except that a GetFileResponse is decoded straight from
// the received frames, its Data copied once into a transport.ChunkBuffer
// (the default codec copies it twice, into a zeroed buffer and then into a
// fresh allocation). The caller may give Data to transport.RecycleChunk.
// A response with any other field layout is decoded by the protobuf codec.
type clientCodec struct{ encoding.CodecV2 }

func newClientCodec() clientCodec {
	return clientCodec{encoding.GetCodecV2(proto.Name)}
}

func (c clientCodec) Unmarshal(data mem.BufferSlice, v any) error {
	resp, ok := v.(*raftpb.GetFileResponse)
	if !ok || !decodeGetFile(data, resp) {
		return c.CodecV2.Unmarshal(data, v)
	}
	return nil
}

// decodeGetFile decodes data into resp if it holds only GetFileResponse's
// known fields with their wire types, and reports whether it did; if not,
// resp may be half set and the caller decodes it another way.
func decodeGetFile(data mem.BufferSlice, resp *raftpb.GetFileResponse) bool {
	resp.Reset()
	r := data.Reader()
	defer r.Close()
	for r.Remaining() > 0 {
		tag, err := binary.ReadUvarint(r)
		if err != nil || tag > math.MaxUint32 {
			return false
		}
		num, typ := protowire.DecodeTag(tag)
		switch {
		case num == 1 && typ == protowire.VarintType:
			x, err := binary.ReadUvarint(r)
			if err != nil {
				return false
			}
			resp.Eof = protowire.DecodeBool(x)
		case num == 2 && typ == protowire.VarintType:
			x, err := binary.ReadUvarint(r)
			if err != nil {
				return false
			}
			resp.ReadSize = int64(x)
		case num == getFileDataField && typ == protowire.BytesType:
			n, err := binary.ReadUvarint(r)
			if err != nil || n > uint64(r.Remaining()) {
				return false
			}
			transport.RecycleChunk(resp.Data) // an earlier data field, replaced
			resp.Data = transport.ChunkBuffer(int(n))
			if _, err := io.ReadFull(r, resp.Data); err != nil {
				return false
			}
		default:
			return false
		}
	}
	return true
}
