//go:build unix

package e2e

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// load is concurrent writers that record which puts were acknowledged.
// Writer w owns keys <prefix>-w<w>-k<j> and writes them in turn, one put
// at a time, each with a new value, so for every key the value that must
// survive is the last acknowledged one, or a later one whose put failed
// without an answer (it may have committed).
type load struct {
	c       *cluster
	prefix  string
	nodes   []*node
	hc      *http.Client
	stopped chan struct{}
	wg      sync.WaitGroup

	mu struct {
		sync.Mutex
		keys    map[string]*keyHist
		acked   int
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

// startLoad starts writers goroutines writing keysPerWriter keys each,
// through any of the cluster's nodes (following redirects, moving on to
// another node after an error).
func (c *cluster) startLoad(prefix string, writers, keysPerWriter int) *load {
	ld := &load{c: c, prefix: prefix, nodes: c.initial(), stopped: make(chan struct{})}
	ld.hc = &http.Client{Transport: c.follow.Transport, Timeout: 3 * time.Second}
	ld.mu.keys = map[string]*keyHist{}
	ld.mu.answers = map[string]int{}
	for w := range writers {
		ld.wg.Add(1)
		go ld.writer(w, keysPerWriter)
	}
	c.t.Cleanup(ld.stop)
	return ld
}

func (ld *load) writer(w, keys int) {
	defer ld.wg.Done()
	target := w % len(ld.nodes)
	for seq := 0; ; seq++ {
		select {
		case <-ld.stopped:
			return
		default:
		}
		key := fmt.Sprintf("%s-w%d-k%03d", ld.prefix, w, seq%keys)
		value := fmt.Sprintf("%s-w%d-%d", ld.prefix, w, seq)
		code, _, err := ld.c.do(ld.hc, "PUT", ld.nodes[target].url(kvPath(key), nil), []byte(value))
		outcome := fmt.Sprint(code)
		if err != nil {
			outcome = "error"
			if strings.Contains(err.Error(), "refused") {
				outcome = "refused"
			}
		}
		ld.mu.Lock()
		h := ld.mu.keys[key]
		if h == nil {
			h = &keyHist{}
			ld.mu.keys[key] = h
		}
		if code == 200 {
			h.acked, h.hasAck, h.maybe = value, true, nil
			ld.mu.acked++
		} else {
			h.maybe = append(h.maybe, value)
		}
		ld.mu.answers[outcome]++
		ld.mu.Unlock()
		if code != 200 {
			target = (target + 1) % len(ld.nodes)
			select { // back off while the cluster elects a leader
			case <-ld.stopped:
				return
			case <-time.After(time.Duration(10+rand.IntN(20)) * time.Millisecond):
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
	return ld.mu.acked
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

func (ld *load) answers() map[string]int {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	return maps.Clone(ld.mu.answers)
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

// checkConverged waits until every running node holds, for every key of
// hist, the same value, and an acceptable one: no acknowledged write is
// lost, and nothing was invented.
func (c *cluster) checkConverged(t *testing.T, hist map[string]keyHist) {
	t.Helper()
	keys := slices.Sorted(maps.Keys(hist))
	var nodes []*node
	for _, n := range c.nodes {
		if n.running() {
			nodes = append(nodes, n)
		}
	}
	acked := 0
	for _, h := range hist {
		if h.hasAck {
			acked++
		}
	}
	waitFor(t, 30*time.Second, fmt.Sprintf("%d nodes to agree on %d keys (%d with acknowledged writes)", len(nodes), len(keys), acked), func() (bool, string) {
		vals := make([]map[string]*string, len(nodes))
		errs := make([]error, len(nodes))
		var wg sync.WaitGroup
		for i, n := range nodes {
			wg.Go(func() {
				vals[i] = map[string]*string{}
				for _, k := range keys {
					v, ok, err := c.staleGet(n, k)
					if err != nil {
						errs[i] = err
						return
					}
					if ok {
						vals[i][k] = &v
					} else {
						vals[i][k] = nil
					}
				}
			})
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				return false, err.Error()
			}
		}
		var bad []string
		for _, k := range keys {
			h := hist[k]
			for i, n := range nodes {
				v := vals[i][k]
				val, exists := "", v != nil
				if exists {
					val = *v
				}
				if !h.acceptable(val, exists) {
					bad = append(bad, fmt.Sprintf("%s has %s=%q (exists %v); %s", n.id, k, val, exists, h.String()))
				}
			}
		}
		if len(bad) > 0 {
			return false, fmt.Sprintf("%d wrong values, e.g. %s", len(bad), strings.Join(bad[:min(3, len(bad))], "; "))
		}
		for _, k := range keys {
			for i := 1; i < len(nodes); i++ {
				a, b := vals[0][k], vals[i][k]
				if (a == nil) != (b == nil) || (a != nil && *a != *b) {
					return false, fmt.Sprintf("%s and %s differ on %s", nodes[0].id, nodes[i].id, k)
				}
			}
		}
		return true, ""
	})
	t.Logf("e2e: %d nodes agree on %d keys; every one of the %d acknowledged last writes is there", len(nodes), len(keys), acked)
}

// putMany writes every key of kv to n (following redirects) with
// concurrency requests at a time; every put must succeed (a 503 is
// retried until a leader answers).
func (c *cluster) putMany(n *node, kv map[string][]byte, concurrency int) {
	t := c.t
	t.Helper()
	keys := slices.Sorted(maps.Keys(kv))
	ch := make(chan string)
	errs := make(chan error, concurrency)
	var wg sync.WaitGroup
	for range concurrency {
		wg.Go(func() {
			for k := range ch {
				// A 503 (no leader, or leadership lost under the write) is
				// retried, as a client would: the PUT is idempotent.
				code, body, err := c.do(c.follow, "PUT", n.url(kvPath(k), nil), kv[k])
				for deadline := time.Now().Add(leaderTimeout); err == nil && code == 503 && time.Now().Before(deadline); {
					time.Sleep(pollInterval) // backing off until a leader is known
					code, body, err = c.do(c.follow, "PUT", n.url(kvPath(k), nil), kv[k])
				}
				if err == nil && code != 200 {
					err = fmt.Errorf("%d %s", code, trunc(body))
				}
				if err != nil {
					errs <- fmt.Errorf("PUT %s: %v", k, err)
					return
				}
			}
		})
	}
	var failed error
feed:
	for _, k := range keys {
		select {
		case ch <- k:
		case failed = <-errs:
			break feed
		}
	}
	close(ch)
	wg.Wait()
	if failed == nil {
		select {
		case failed = <-errs:
		default:
		}
	}
	if failed != nil {
		t.Fatalf("e2e: %v", failed)
	}
}
