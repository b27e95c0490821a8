//go:build linux

package faults

// The monitor polls every node's status during a run and records who
// claims to lead in which term.

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

const monitorInterval = 50 * time.Millisecond

// sample is one node's status at one time.
type sample struct {
	at   time.Duration
	node string
	st   status
}

type monitor struct {
	e    *env
	hc   *http.Client
	quit chan struct{}
	wg   sync.WaitGroup

	mu struct {
		sync.Mutex
		samples []sample
		leaders map[uint64]map[string]time.Duration // term → leader → first seen
		stopped bool
	}
}

func startMonitor(e *env) *monitor {
	m := &monitor{e: e, quit: make(chan struct{})}
	m.hc = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2}, Timeout: 250 * time.Millisecond}
	m.mu.leaders = map[uint64]map[string]time.Duration{}
	for _, n := range e.c.nodes {
		m.wg.Go(func() { m.poll(n) })
	}
	return m
}

func (m *monitor) poll(n *node) {
	t := time.NewTicker(monitorInterval)
	defer t.Stop()
	for {
		select {
		case <-m.quit:
			return
		case <-t.C:
		}
		if !n.running() || n.paused() {
			continue
		}
		st, err := n.statusWith(m.hc)
		if err != nil {
			continue
		}
		m.record(n.id, st)
	}
}

func (m *monitor) record(id string, st *status) {
	at := time.Since(m.e.epoch)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mu.samples = append(m.mu.samples, sample{at: at, node: id, st: *st})
	if st.isLeader() {
		ls := m.mu.leaders[st.Term]
		if ls == nil {
			ls = map[string]time.Duration{}
			m.mu.leaders[st.Term] = ls
		}
		if _, ok := ls[id]; !ok {
			ls[id] = at
		}
	}
}

// observe records a status fetched elsewhere (by the scenario).
func (m *monitor) observe(n *node) *status {
	st, err := n.status()
	if err != nil {
		return nil
	}
	m.record(n.id, st)
	return st
}

func (m *monitor) stop() {
	m.mu.Lock()
	if m.mu.stopped {
		m.mu.Unlock()
		return
	}
	m.mu.stopped = true
	m.mu.Unlock()
	close(m.quit)
	m.wg.Wait()
	m.hc.CloseIdleConnections()
}

// multipleLeaders returns a description of every term with two leaders.
func (m *monitor) multipleLeaders() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, term := range slices.Sorted(maps.Keys(m.mu.leaders)) {
		ls := m.mu.leaders[term]
		if len(ls) > 1 {
			var who []string
			for _, id := range slices.Sorted(maps.Keys(ls)) {
				who = append(who, fmt.Sprintf("%s (from %.3fs)", id, ls[id].Seconds()))
			}
			out = append(out, fmt.Sprintf("term %d: %s", term, strings.Join(who, ", ")))
		}
	}
	return out
}

// terms returns how many terms had a leader, and the highest term seen.
func (m *monitor) terms() (led int, highest uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.mu.samples {
		highest = max(highest, s.st.Term)
	}
	return len(m.mu.leaders), highest
}

// maxTerm returns the highest term any node reported between from and to
// (times since the run began), and who reported it.
func (m *monitor) maxTerm(from, to time.Duration) (uint64, string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var term uint64
	who := ""
	for _, s := range m.mu.samples {
		if s.at >= from && s.at <= to && s.st.Term > term {
			term, who = s.st.Term, s.node
		}
	}
	return term, who
}

// dump renders the samples as a table.
func (m *monitor) dump() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var b strings.Builder
	b.WriteString("time\tnode\trole\tterm\tleader\tcommit\tapplied\tfirst\tlast\tsnapshot\tsnap_state\tfiles\tbytes\tpeers\n")
	for _, s := range m.mu.samples {
		st := s.st
		var peers []string
		for _, p := range st.Peers {
			peers = append(peers, p.ID)
		}
		fmt.Fprintf(&b, "%.3f\t%s\t%s\t%d\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%d/%d\t%d/%d\t%s\n", s.at.Seconds(), s.node, st.Role, st.Term,
			st.LeaderID, st.CommitIndex, st.AppliedIndex, st.FirstLogIndex, st.LastLogIndex, st.Snapshot.LastIncludedIndex,
			st.Snapshot.State, st.Snapshot.Progress.FilesDone, st.Snapshot.Progress.FilesTotal,
			st.Snapshot.Progress.BytesDone, st.Snapshot.Progress.BytesTotal, strings.Join(peers, ","))
	}
	return b.String()
}
