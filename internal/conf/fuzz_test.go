package conf

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/graft-raft/graft/raftpb"
)

// fuzzSeeds are configurations whose encodings seed FuzzDecodeConfiguration
// (testdata/fuzz/FuzzDecodeConfiguration holds them and a few malformed
// encodings as files).
var fuzzSeeds = []Configuration{
	{Peers: []Peer{{"n1", "10.0.0.1:7000"}}},
	{Peers: []Peer{{"a", "h:1"}, {"b", "h:2"}, {"c", "h:3"}}},
	{
		Peers:    []Peer{{"a", "h:1"}, {"b", "h:2"}},
		OldPeers: []Peer{{"a", "h:1"}, {"c", "h:3"}},
		Learners: []Peer{{"l", "[::1]:9"}},
	},
	{},
}

// FuzzDecodeConfiguration checks that the data of a configuration entry,
// which comes from the log on disk and from leaders over the network,
// either fails to decode with ErrInvalid or decodes to a valid
// configuration that survives a round trip, and that decoding never
// panics.
func FuzzDecodeConfiguration(f *testing.F) {
	for _, c := range fuzzSeeds {
		b := c.Encode()
		f.Add(b)
		if len(b) > 0 {
			f.Add(b[:len(b)-1])
		}
	}
	f.Add([]byte{0xff, 0xff})
	f.Add(mustMarshal(f, &raftpb.Configuration{Peers: []string{"a=h:1", "a=h:2"}}))
	f.Add(mustMarshal(f, &raftpb.Configuration{Peers: []string{"a=h:1"}, Learners: []string{"a=h:1"}}))
	f.Add(mustMarshal(f, &raftpb.Configuration{Peers: []string{"no-address"}}))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Decode(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Decode(%x) = %v, not ErrInvalid", data, err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Decode(%x) = %v, which is invalid: %v", data, c, err)
		}
		again, err := Decode(c.Encode())
		if err != nil || !again.Equal(c) {
			t.Fatalf("round trip of %v gives %v, %v", c, again, err)
		}
		for _, l := range c.Learners {
			if c.IsVoter(l.ID) {
				t.Fatalf("Decode(%x): %q is a voter and a learner", data, l.ID)
			}
		}
	})
}

func mustMarshal(f *testing.F, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		f.Fatal(err)
	}
	return b
}
