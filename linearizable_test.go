package graft_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/graft-raft/graft"
	"github.com/graft-raft/graft/rafttest"
)

type regInput struct {
	put   bool
	key   string
	value string
}

// registerModel is a set of registers, one per key, each starting empty.
var registerModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		for _, op := range h {
			k := op.Input.(regInput).key
			byKey[k] = append(byKey[k], op)
		}
		var out [][]porcupine.Operation
		for _, ops := range byKey {
			out = append(out, ops)
		}
		return out
	},
	Init: func() interface{} { return "" },
	Step: func(state, input, output interface{}) (bool, interface{}) {
		in := input.(regInput)
		if in.put {
			return true, in.value
		}
		return output.(string) == state.(string), state
	},
	DescribeOperation: func(input, output interface{}) string {
		in := input.(regInput)
		if in.put {
			return fmt.Sprintf("put(%s, %s)", in.key, in.value)
		}
		return fmt.Sprintf("get(%s) -> %q", in.key, output)
	},
}

// ReadIndex never returns a stale value, even when the old leader is cut
// off and a new one takes writes: a history of writes through the leader
// and ReadIndex reads on every node is checked for linearizability.
func TestReadIndexLinearizable(t *testing.T) {
	c := rafttest.New(t, rafttest.Options{N: 3})
	rng := c.Rand()
	c.One(cmd("start"), 3, true)
	start := time.Now()
	now := func() int64 { return int64(time.Since(start)) }
	var mu sync.Mutex
	var history []porcupine.Operation
	record := func(op porcupine.Operation) {
		mu.Lock()
		history = append(history, op)
		mu.Unlock()
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	seeds := make([]uint64, 4)
	for i := range seeds {
		seeds[i] = rng.Uint64()
	}
	for client := 0; client < 4; client++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := newRand(seeds[client])
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("k%d", r.IntN(2))
				if r.IntN(2) == 0 {
					value := fmt.Sprintf("c%d-%d", client, j)
					leader := ""
					for _, id := range c.IDs() {
						if n := c.Node(id); n != nil && n.IsLeader() {
							leader = id
						}
					}
					if leader == "" {
						time.Sleep(5 * time.Millisecond) // no leader: back off
						continue
					}
					op := porcupine.Operation{ClientId: client, Input: regInput{put: true, key: key, value: value}, Call: now()}
					_, err := c.Propose(leader, []byte(key+"="+value))
					switch {
					case err == nil:
						op.Return = now()
					case errors.Is(err, graft.ErrNotLeader) || errors.Is(err, graft.ErrBusy):
						continue // never appended: no effect
					default:
						op.Return = math.MaxInt64 // outcome unknown: it may apply at any later time
					}
					record(op)
					continue
				}
				id := c.IDs()[r.IntN(3)]
				n := c.Node(id)
				op := porcupine.Operation{ClientId: client, Input: regInput{key: key}, Call: now()}
				ctx, cancel := context.WithTimeout(context.Background(), electionTimeout)
				_, err := n.ReadIndex(ctx)
				cancel()
				if err != nil {
					continue // failed reads have no effect
				}
				v, _ := c.FSM(id).Value(key)
				op.Output = v
				op.Return = now()
				record(op)
			}
		}()
	}
	// Cut the leader off while clients run, then heal.
	waitTicks(c, 300*time.Millisecond)
	old := c.CheckOneLeader()
	c.Disconnect(old)
	c.CheckOneLeader(without(c.IDs(), old)...)
	waitTicks(c, 500*time.Millisecond)
	c.Reconnect(old)
	waitTicks(c, 300*time.Millisecond)
	close(stop)
	wg.Wait()

	res, info := porcupine.CheckOperationsVerbose(registerModel, history, 30*time.Second)
	t.Logf("%d operations, result %s", len(history), res)
	if res != porcupine.Ok {
		dir := filepath.Join(os.TempDir(), fmt.Sprintf("graft-porcupine-%d", c.Seed))
		os.MkdirAll(dir, 0o755)
		path := filepath.Join(dir, "history.html")
		if err := porcupine.VisualizePath(registerModel, info, path); err == nil {
			t.Logf("visualisation: %s", path)
		}
		t.Fatalf("history is not linearizable (%s, seed %d)", res, c.Seed)
	}
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed^0x5bd1e995)) }
