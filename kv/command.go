package kv

import (
	"encoding/binary"
	"fmt"
)

// Op is the kind of a Command.
type Op byte

// Operations. The numbers are part of the log format: never reuse one.
const (
	// OpPut sets Key to Value.
	OpPut Op = 1
	// OpPutIfPrev sets Key to Value if its current value is Prev
	// (compare-and-set); otherwise it changes nothing and the result is
	// CodeMismatch, or CodeNotFound if Key is missing.
	OpPutIfPrev Op = 2
	// OpCreate sets Key to Value if Key is missing; otherwise it changes
	// nothing and the result is CodeExists.
	OpCreate Op = 3
	// OpDelete removes Key; the result is CodeNotFound if it was missing.
	OpDelete Op = 4
	// OpSetMember records the HTTP address (Value) of the peer whose id is
	// Key, so that every node can redirect clients to the leader's HTTP
	// API. It lives outside the user's key space.
	OpSetMember Op = 5
)

// String names the operation.
func (o Op) String() string {
	switch o {
	case OpPut:
		return "put"
	case OpPutIfPrev:
		return "put-if-prev"
	case OpCreate:
		return "create"
	case OpDelete:
		return "delete"
	case OpSetMember:
		return "set-member"
	}
	return fmt.Sprintf("op(%d)", byte(o))
}

// commandVersion is the first byte of every encoded command. A node that
// meets a version it does not know stops (it cannot apply the entry the
// way its peers do) rather than skip it.
const commandVersion = 1

// Command is one replicated change to the store: the data of one raft
// log entry.
//
// Encoded (version 1) it is
//
//	version=1 | op | field...
//
// where each field is a uvarint length followed by that many bytes: Key
// and Value for put, create and set-member; Key, Prev and Value for
// put-if-prev; Key for delete. Lengths use the shortest uvarint, and
// nothing follows the last field, so every command has exactly one
// encoding.
type Command struct {
	Op    Op
	Key   []byte
	Value []byte // OpPut, OpPutIfPrev, OpCreate, OpSetMember
	Prev  []byte // OpPutIfPrev
}

// fields returns pointers to the fields op encodes, in order, or nil for
// an unknown op.
func (c *Command) fields() []*[]byte {
	switch c.Op {
	case OpPut, OpCreate, OpSetMember:
		return []*[]byte{&c.Key, &c.Value}
	case OpPutIfPrev:
		return []*[]byte{&c.Key, &c.Prev, &c.Value}
	case OpDelete:
		return []*[]byte{&c.Key}
	}
	return nil
}

// Encode appends c's encoding to dst and returns the result. It panics on
// an unknown Op, a programming error.
func (c Command) Encode(dst []byte) []byte {
	fs := c.fields()
	if fs == nil {
		panic(fmt.Sprintf("kv: encoding a command with unknown op %d", c.Op))
	}
	dst = append(dst, commandVersion, byte(c.Op))
	for _, f := range fs {
		dst = binary.AppendUvarint(dst, uint64(len(*f)))
		dst = append(dst, *f...)
	}
	return dst
}

// DecodeCommand decodes a command encoded by Encode. The returned slices
// alias data. Errors wrap ErrBadCommand and say what is wrong.
func DecodeCommand(data []byte) (Command, error) {
	bad := func(format string, args ...any) (Command, error) {
		return Command{}, fmt.Errorf("%w: %s", ErrBadCommand, fmt.Sprintf(format, args...))
	}
	if len(data) < 2 {
		return bad("%d bytes is too short", len(data))
	}
	if data[0] != commandVersion {
		return bad("unknown version %d (written by a newer graftkv?)", data[0])
	}
	c := Command{Op: Op(data[1])}
	fs := c.fields()
	if fs == nil {
		return bad("unknown op %d", data[1])
	}
	rest := data[2:]
	for i, f := range fs {
		n, w := binary.Uvarint(rest)
		if w <= 0 {
			return bad("field %d of %s: bad length", i, c.Op)
		}
		if w != uvarintLen(n) {
			return bad("field %d of %s: length not minimally encoded", i, c.Op)
		}
		rest = rest[w:]
		if n > uint64(len(rest)) {
			return bad("field %d of %s: length %d exceeds the %d bytes left", i, c.Op, n, len(rest))
		}
		*f = rest[:n:n]
		rest = rest[n:]
	}
	if len(rest) > 0 {
		return bad("%d trailing bytes after %s", len(rest), c.Op)
	}
	if len(c.Key) == 0 {
		return bad("empty key in %s", c.Op)
	}
	return c, nil
}

// uvarintLen is the length of the shortest uvarint encoding of v.
func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}
