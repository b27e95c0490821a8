package faults

import (
	"slices"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

func op(client int, call, ret int64, in Input, out Output) porcupine.Operation {
	return porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret}
}

func get(k string) Input       { return Input{Op: OpGet, Key: k} }
func put(k, v string) Input    { return Input{Op: OpPut, Key: k, Value: v} }
func cas(k, p, v string) Input { return Input{Op: OpCAS, Key: k, Prev: p, Value: v} }
func del(k string) Input       { return Input{Op: OpDelete, Key: k} }
func val(v string) Output      { return Output{Exists: true, Value: v} }

var (
	absent = Output{}
	ok     = Output{}
	maybe  = Output{Unknown: true}
)

func TestModel(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    []porcupine.Operation
		want porcupine.CheckResult
	}{
		{"read your write", []porcupine.Operation{
			op(0, 0, 10, put("a", "1"), ok),
			op(1, 20, 30, get("a"), val("1")),
		}, porcupine.Ok},
		{"stale read", []porcupine.Operation{
			op(0, 0, 10, put("a", "1"), ok),
			op(0, 11, 20, put("a", "2"), ok),
			op(1, 21, 30, get("a"), val("1")),
		}, porcupine.Illegal},
		{"lost write", []porcupine.Operation{
			op(0, 0, 10, put("a", "1"), ok),
			op(1, 20, 30, get("a"), absent),
		}, porcupine.Illegal},
		{"unknown write may apply late", []porcupine.Operation{
			op(0, 0, Infinity, put("a", "1"), maybe),
			op(1, 20, 30, get("a"), absent),
			op(1, 40, 50, get("a"), val("1")),
		}, porcupine.Ok},
		{"unknown write may never apply", []porcupine.Operation{
			op(0, 0, Infinity, put("a", "1"), maybe),
			op(1, 20, 30, get("a"), absent),
		}, porcupine.Ok},
		{"no value from nowhere", []porcupine.Operation{
			op(1, 20, 30, get("a"), val("1")),
		}, porcupine.Illegal},
		{"cas succeeds on its prev", []porcupine.Operation{
			op(0, 0, 10, put("a", "1"), ok),
			op(0, 11, 20, cas("a", "1", "2"), Output{OK: true}),
			op(1, 21, 30, get("a"), val("2")),
		}, porcupine.Ok},
		{"cas cannot fail on its prev", []porcupine.Operation{
			op(0, 0, 10, put("a", "1"), ok),
			op(0, 11, 20, cas("a", "1", "2"), Output{OK: false}),
		}, porcupine.Illegal},
		{"unknown cas applies only on its prev", []porcupine.Operation{
			op(0, 0, 10, put("a", "1"), ok),
			op(0, 11, Infinity, cas("a", "0", "2"), maybe),
			op(1, 30, 40, get("a"), val("2")),
		}, porcupine.Illegal},
		{"delete", []porcupine.Operation{
			op(0, 0, 10, put("a", "1"), ok),
			op(0, 11, 20, del("a"), Output{Exists: true}),
			op(1, 21, 30, get("a"), absent),
			op(1, 31, 40, del("a"), Output{Exists: false}),
		}, porcupine.Ok},
		{"keys are independent", []porcupine.Operation{
			op(0, 0, 10, put("a", "1"), ok),
			op(1, 20, 30, get("b"), absent),
		}, porcupine.Ok},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := porcupine.CheckOperationsTimeout(Model, tc.h, 10*time.Second); got != tc.want {
				t.Errorf("check = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestFinalStates(t *testing.T) {
	s := func(v string) State { return State{Exists: true, Value: v} }
	for _, tc := range []struct {
		name string
		h    []porcupine.Operation
		want []State
	}{
		{"nothing written", nil, []State{{}}},
		{"last acknowledged", []porcupine.Operation{
			op(0, 0, 10, put("a", "1"), ok),
			op(0, 11, 20, put("a", "2"), ok),
		}, []State{s("2")}},
		{"concurrent writes", []porcupine.Operation{
			op(0, 0, 10, put("a", "1"), ok),
			op(1, 5, 15, put("a", "2"), ok),
		}, []State{s("1"), s("2")}},
		{"unknown after", []porcupine.Operation{
			op(0, 0, 10, put("a", "1"), ok),
			op(0, 11, Infinity, del("a"), maybe),
		}, []State{s("1"), {}}},
		{"failed cas is no write", []porcupine.Operation{
			op(0, 0, 10, put("a", "1"), ok),
			op(0, 11, 20, cas("a", "0", "2"), Output{OK: false}),
		}, []State{s("1")}},
		{"only unknown", []porcupine.Operation{
			op(0, 0, Infinity, put("a", "1"), maybe),
		}, []State{{}, s("1")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := FinalStates(tc.h)
			for _, w := range tc.want {
				if !slices.Contains(got, w) {
					t.Errorf("FinalStates = %v, missing %v", got, w)
				}
			}
			if len(got) != len(tc.want) {
				t.Errorf("FinalStates = %v, want %v", got, tc.want)
			}
		})
	}
}
