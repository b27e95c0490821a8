package faults

import (
	"fmt"
	"hash/fnv"
	"math"
	"strconv"

	"github.com/anishathalye/porcupine"
)

// Op is the kind of a key-value operation.
type Op uint8

// The operations of the model.
const (
	OpGet    Op = iota // read a key
	OpPut              // set a key
	OpCAS              // set a key if it holds Prev
	OpDelete           // remove a key
)

func (o Op) String() string {
	switch o {
	case OpGet:
		return "get"
	case OpPut:
		return "put"
	case OpCAS:
		return "cas"
	case OpDelete:
		return "delete"
	}
	return "op(" + strconv.Itoa(int(o)) + ")"
}

// IsWrite reports whether o may change the state.
func (o Op) IsWrite() bool { return o != OpGet }

// Input is an operation as a client issued it.
type Input struct {
	Op    Op
	Key   string
	Value string // OpPut, OpCAS: the new value
	Prev  string // OpCAS: the value expected
}

// Output is what the client observed.
type Output struct {
	// Unknown: the client got no definite answer (a timeout, a reset
	// connection, an error after the request may have been proposed).
	// The operation may have taken effect at any time after its call,
	// or never; record it with Return = Infinity.
	Unknown bool
	// Exists and Value are what a get read; for a delete, Exists says
	// whether the key was there (200) or not (404).
	Exists bool
	Value  string
	// OK is whether a CAS succeeded (200) or found another value (412).
	OK bool
}

// Infinity is the Return time of an operation whose outcome is unknown: it
// may be linearized at any point after its call.
const Infinity = math.MaxInt64

// State is one register of the model: a key's value, or its absence.
type State struct {
	Exists bool
	Value  string
}

func (s State) String() string {
	if !s.Exists {
		return "∅"
	}
	return strconv.Quote(s.Value)
}

// Step applies in, observed as out, to st. It reports whether the
// observation is possible and returns the next state.
func Step(st State, in Input, out Output) (bool, State) {
	switch in.Op {
	case OpGet:
		if out.Unknown {
			return true, st
		}
		return out.Exists == st.Exists && (!st.Exists || out.Value == st.Value), st
	case OpPut:
		return true, State{Exists: true, Value: in.Value}
	case OpCAS:
		match := st.Exists && st.Value == in.Prev
		switch {
		case out.Unknown && match, !out.Unknown && out.OK && match:
			return true, State{Exists: true, Value: in.Value}
		case out.Unknown, !out.OK && !match:
			return true, st
		}
		return false, st
	case OpDelete:
		if out.Unknown {
			return true, State{}
		}
		return out.Exists == st.Exists, State{}
	}
	return false, st
}

// Model is a porcupine model of a key-value store: one register per key
// (the history is partitioned by key), with get, put, compare-and-set and
// delete, and operations of unknown outcome.
var Model = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string]int{}
		var out [][]porcupine.Operation
		for _, op := range h {
			k := op.Input.(Input).Key
			i, ok := byKey[k]
			if !ok {
				i = len(out)
				byKey[k] = i
				out = append(out, nil)
			}
			out[i] = append(out[i], op)
		}
		return out
	},
	Init: func() any { return State{} },
	Step: func(state, input, output any) (bool, any) {
		return Step(state.(State), input.(Input), output.(Output))
	},
	Equal: func(a, b any) bool { return a.(State) == b.(State) },
	Hash: func(state any) uint64 {
		s := state.(State)
		if !s.Exists {
			return 0
		}
		h := fnv.New64a()
		h.Write([]byte(s.Value))
		return h.Sum64() | 1
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(Input), output.(Output)
		var call string
		switch in.Op {
		case OpGet:
			call = fmt.Sprintf("get(%s)", in.Key)
		case OpPut:
			call = fmt.Sprintf("put(%s, %q)", in.Key, in.Value)
		case OpCAS:
			call = fmt.Sprintf("cas(%s, %q → %q)", in.Key, in.Prev, in.Value)
		case OpDelete:
			call = fmt.Sprintf("delete(%s)", in.Key)
		}
		if out.Unknown {
			return call + " → ?"
		}
		switch in.Op {
		case OpGet:
			if !out.Exists {
				return call + " → ∅"
			}
			return fmt.Sprintf("%s → %q", call, out.Value)
		case OpCAS:
			return fmt.Sprintf("%s → %v", call, out.OK)
		case OpDelete:
			if !out.Exists {
				return call + " → 404"
			}
		}
		return call + " → ok"
	},
	DescribeState: func(state any) string { return state.(State).String() },
}

// FinalStates returns the states a key may hold once every operation of
// ops (that key's history) has ended: the effect of any write that no
// acknowledged write started after, or the initial state if no write was
// acknowledged. A failed compare-and-set is not a write; a write of
// unknown outcome may or may not have taken effect.
//
// It is a necessary condition only (the linearizability check is the
// complete one), but a key whose final state is not among these has lost
// an acknowledged write.
func FinalStates(ops []porcupine.Operation) []State {
	effective := func(op porcupine.Operation) bool {
		in, out := op.Input.(Input), op.Output.(Output)
		return in.Op.IsWrite() && (out.Unknown || in.Op != OpCAS || out.OK)
	}
	acked := false
	var lastCall int64 = math.MinInt64 // the latest call of an acknowledged write
	for _, op := range ops {
		if effective(op) && !op.Output.(Output).Unknown {
			acked = true
			lastCall = max(lastCall, op.Call)
		}
	}
	seen := map[State]bool{}
	var out []State
	add := func(s State) {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	if !acked {
		add(State{})
	}
	for _, op := range ops {
		if !effective(op) || op.Return < lastCall {
			continue
		}
		in := op.Input.(Input)
		if in.Op == OpDelete {
			add(State{})
		} else {
			add(State{Exists: true, Value: in.Value})
		}
	}
	return out
}
