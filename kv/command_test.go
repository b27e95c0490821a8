package kv

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestCommandRoundTrip(t *testing.T) {
	for _, c := range []Command{
		{Op: OpPut, Key: []byte("k"), Value: []byte("v")},
		{Op: OpPut, Key: []byte("k"), Value: []byte{}},
		{Op: OpPut, Key: []byte{0, 0xff, '/'}, Value: bytes.Repeat([]byte("x"), 300)},
		{Op: OpPutIfPrev, Key: []byte("k"), Prev: []byte("old"), Value: []byte("new")},
		{Op: OpPutIfPrev, Key: []byte("k"), Prev: []byte{}, Value: []byte{}},
		{Op: OpCreate, Key: []byte("k"), Value: []byte("v")},
		{Op: OpDelete, Key: []byte("k")},
		{Op: OpSetMember, Key: []byte("n1"), Value: []byte("127.0.0.1:8001")},
	} {
		t.Run(c.Op.String(), func(t *testing.T) {
			data := c.Encode(nil)
			got, err := DecodeCommand(data)
			if err != nil {
				t.Fatalf("DecodeCommand(%x): %v", data, err)
			}
			if got.Op != c.Op || !bytes.Equal(got.Key, c.Key) || !bytes.Equal(got.Value, c.Value) || !bytes.Equal(got.Prev, c.Prev) {
				t.Fatalf("round trip of %+v gave %+v", c, got)
			}
			if again := got.Encode(nil); !bytes.Equal(again, data) {
				t.Fatalf("re-encoding gave %x, want %x", again, data)
			}
		})
	}
}

func TestCommandEncodingIsCompact(t *testing.T) {
	// version, op, 1-byte length, key, 1-byte length, value.
	data := Command{Op: OpPut, Key: []byte("key"), Value: []byte("value")}.Encode(nil)
	if want := []byte("\x01\x01\x03key\x05value"); !bytes.Equal(data, want) {
		t.Fatalf("Encode = %q, want %q", data, want)
	}
}

func TestDecodeCommandRejects(t *testing.T) {
	for _, tc := range []struct {
		name, data, want string
	}{
		{"empty", "", "too short"},
		{"version only", "\x01", "too short"},
		{"newer version", "\x02\x01\x01k\x01v", "unknown version 2"},
		{"version zero", "\x00\x01\x01k\x01v", "unknown version 0"},
		{"unknown op", "\x01\x09\x01k", "unknown op 9"},
		{"op zero", "\x01\x00\x01k", "unknown op 0"},
		{"missing field", "\x01\x01\x01k", "field 1 of put: bad length"},
		{"truncated field", "\x01\x01\x01k\x05val", "length 5 exceeds the 3 bytes left"},
		{"truncated varint", "\x01\x04\x80", "bad length"},
		{"overlong varint", "\x01\x04\x81\x00k", "not minimally encoded"},
		{"trailing bytes", "\x01\x04\x01kX", "1 trailing bytes"},
		{"empty key", "\x01\x04\x00", "empty key"},
		{"huge length", "\x01\x04\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "exceeds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeCommand([]byte(tc.data))
			if !errors.Is(err, ErrBadCommand) {
				t.Fatalf("DecodeCommand(%q) = %v, want ErrBadCommand", tc.data, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("DecodeCommand(%q) = %q, want it to mention %q", tc.data, err, tc.want)
			}
		})
	}
}

// FuzzDecodeCommand checks that any bytes either fail to decode with
// ErrBadCommand or decode to a command whose encoding is exactly those
// bytes (one encoding per command), and that decoding never panics.
func FuzzDecodeCommand(f *testing.F) {
	for _, c := range []Command{
		{Op: OpPut, Key: []byte("k"), Value: []byte("v")},
		{Op: OpPutIfPrev, Key: []byte("k"), Prev: []byte("a"), Value: []byte("b")},
		{Op: OpCreate, Key: []byte("k"), Value: bytes.Repeat([]byte{0xaa}, 200)},
		{Op: OpDelete, Key: []byte("some/key")},
		{Op: OpSetMember, Key: []byte("n1"), Value: []byte("10.0.0.1:8000")},
	} {
		f.Add(c.Encode(nil))
	}
	f.Add([]byte{})
	f.Add([]byte("\x01\x04\x81\x00k"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := DecodeCommand(data)
		if err != nil {
			if !errors.Is(err, ErrBadCommand) {
				t.Fatalf("DecodeCommand(%x) = %v, not ErrBadCommand", data, err)
			}
			return
		}
		if len(c.Key) == 0 {
			t.Fatalf("DecodeCommand(%x) accepted an empty key", data)
		}
		if again := c.Encode(nil); !bytes.Equal(again, data) {
			t.Fatalf("DecodeCommand(%x) = %+v, which encodes as %x", data, c, again)
		}
	})
}
