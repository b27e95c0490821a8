package dockertest

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// load is concurrent writers that record which puts were acknowledged and
// when. Writer w owns keys <prefix>-w<w>-k<j> and writes them in turn, one
// put at a time, each with a new value, through any node (following
// redirects, moving to the next node after a failure). For every key, the
// value that must survive is the last acknowledged one, or a later one
// whose put ended without an answer (it may have committed).
type load struct {
	c       *cluster
	prefix  string
	hc      *http.Client
	stopped chan struct{}
	wg      sync.WaitGroup

	mu struct {
		sync.Mutex
		keys    map[string]*keyHist
		acks    []time.Time    // when each acknowledged write was answered
		answers map[string]int // outcome → count, for the log
	}
}

// keyHist is what may be a key's value.
type keyHist struct {
	acked  string // last acknowledged value
	hasAck bool
	maybe  []string // values put after it whose outcome is unknown
}

// acceptable reports whether value (exists=false: missing) is allowed.
func (h *keyHist) acceptable(value string, exists bool) bool {
	if !exists {
		return !h.hasAck
	}
	return (h.hasAck && value == h.acked) || slices.Contains(h.maybe, value)
}

func (h *keyHist) String() string {
	if h.hasAck {
		return fmt.Sprintf("acked %q, maybe %q", h.acked, h.maybe)
	}
	return fmt.Sprintf("never acked, maybe %q", h.maybe)
}

// startLoad starts writers goroutines, each writing keysPerWriter keys.
func (c *cluster) startLoad(prefix string, writers, keysPerWriter int) *load {
	ld := &load{c: c, prefix: prefix, stopped: make(chan struct{}), hc: c.follow}
	ld.mu.keys = map[string]*keyHist{}
	ld.mu.answers = map[string]int{}
	for w := range writers {
		ld.wg.Add(1)
		go ld.writer(w, keysPerWriter)
	}
	c.t.Cleanup(ld.stop)
	return ld
}

// notSent reports whether a request failed before reaching any node: the
// node does not run, or its port refused the connection.
func notSent(err error) bool {
	return errors.Is(err, errNodeDown) || errors.Is(err, syscall.ECONNREFUSED)
}

func (ld *load) writer(w, keys int) {
	defer ld.wg.Done()
	nodes := ld.c.nodes
	target := w % len(nodes)
	for seq := 0; ; seq++ {
		select {
		case <-ld.stopped:
			return
		default:
		}
		key := fmt.Sprintf("%s-w%d-k%03d", ld.prefix, w, seq%keys)
		value := fmt.Sprintf("%s-w%d-%d", ld.prefix, w, seq)
		code, _, err := do(ld.hc, "PUT", nodes[target].url(kvPath(key), nil), []byte(value))
		now := time.Now()
		outcome := fmt.Sprint(code)
		switch {
		case err != nil && notSent(err):
			outcome = "not sent"
		case err != nil:
			outcome = "error"
		}
		ld.mu.Lock()
		h := ld.mu.keys[key]
		if h == nil {
			h = &keyHist{}
			ld.mu.keys[key] = h
		}
		switch {
		case code == 200:
			h.acked, h.hasAck, h.maybe = value, true, nil
			ld.mu.acks = append(ld.mu.acks, now)
		case outcome != "not sent":
			h.maybe = append(h.maybe, value)
		}
		ld.mu.answers[outcome]++
		ld.mu.Unlock()
		if code != 200 {
			target = (target + 1) % len(nodes)
			select { // back off while the cluster elects a leader
			case <-ld.stopped:
				return
			case <-time.After(time.Duration(20+rand.IntN(30)) * time.Millisecond):
			}
		}
	}
}

// stop stops the writers and waits for them.
func (ld *load) stop() {
	select {
	case <-ld.stopped:
	default:
		close(ld.stopped)
	}
	ld.wg.Wait()
}

func (ld *load) acked() int {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	return len(ld.mu.acks)
}

func (ld *load) answers() map[string]int {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	return maps.Clone(ld.mu.answers)
}

// waitAcked waits for n more acknowledged writes.
func (ld *load) waitAcked(t *testing.T, n int, what string) {
	t.Helper()
	want := ld.acked() + n
	waitFor(t, leaderTimeout, fmt.Sprintf("%d acknowledged writes %s", want, what), func() (bool, string) {
		got := ld.acked()
		return got >= want, fmt.Sprintf("%d acknowledged; answers %v", got, ld.answers())
	})
}

// longestGap is the longest time within [from, to] without an
// acknowledged write, and when it began.
func (ld *load) longestGap(from, to time.Time) (time.Duration, time.Time) {
	ld.mu.Lock()
	acks := slices.Clone(ld.mu.acks)
	ld.mu.Unlock()
	slices.SortFunc(acks, func(a, b time.Time) int { return a.Compare(b) })
	prev, gap, at := from, time.Duration(0), from
	for _, a := range acks {
		if a.Before(from) {
			continue
		}
		if a.After(to) {
			break
		}
		if d := a.Sub(prev); d > gap {
			gap, at = d, prev
		}
		prev = a
	}
	if d := to.Sub(prev); d > gap {
		gap, at = d, prev
	}
	return gap, at
}

// history returns a copy of every key's history.
func (ld *load) history() map[string]keyHist {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	out := map[string]keyHist{}
	for k, h := range ld.mu.keys {
		out[k] = keyHist{acked: h.acked, hasAck: h.hasAck, maybe: slices.Clone(h.maybe)}
	}
	return out
}

// checkConverged waits until every up node holds, for every key of hist,
// the same value, and an acceptable one: no acknowledged write is lost,
// nothing was invented, and the replicas agree.
func (c *cluster) checkConverged(hist map[string]keyHist) {
	t := c.t
	t.Helper()
	keys := slices.Sorted(maps.Keys(hist))
	nodes := c.upNodes()
	acked := 0
	for _, h := range hist {
		if h.hasAck {
			acked++
		}
	}
	waitFor(t, catchUpTime, fmt.Sprintf("%d nodes to agree on %d keys (%d with acknowledged writes)", len(nodes), len(keys), acked), func() (bool, string) {
		vals, err := c.staleValues(nodes, keys)
		if err != nil {
			return false, err.Error()
		}
		var bad []string
		for _, k := range keys {
			h := hist[k]
			for i, n := range nodes {
				v, exists := vals[i][k]
				if !h.acceptable(v, exists) {
					bad = append(bad, fmt.Sprintf("%s has %s=%q (exists %v); %s", n.id, k, v, exists, h.String()))
				}
			}
		}
		if len(bad) > 0 {
			return false, fmt.Sprintf("%d wrong values, e.g. %s", len(bad), strings.Join(bad[:min(3, len(bad))], "; "))
		}
		for i := 1; i < len(nodes); i++ {
			if !maps.Equal(vals[0], vals[i]) {
				return false, fmt.Sprintf("%s and %s differ", nodes[0].id, nodes[i].id)
			}
		}
		return true, ""
	})
	t.Logf("dockertest: %d nodes agree on %d keys; each of the %d acknowledged last writes is there", len(nodes), len(keys), acked)
}

// staleValues reads keys from each node's local state (present keys only).
func (c *cluster) staleValues(nodes []*node, keys []string) ([]map[string]string, error) {
	vals := make([]map[string]string, len(nodes))
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() {
			vals[i] = map[string]string{}
			for _, k := range keys {
				v, ok, err := n.staleGet(k)
				if err != nil {
					errs[i] = err
					return
				}
				if ok {
					vals[i][k] = v
				}
			}
		})
	}
	wg.Wait()
	return vals, errors.Join(errs...)
}
