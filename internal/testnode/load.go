package testnode

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"sync"
	"time"
)

// Load is a set of client goroutines that write unique commands to a
// Cluster's leader and record every write the leader acknowledged (HTTP
// 200). A failed or unanswered write is never retried with the same
// command: the next attempt uses a new one, so every command appears at
// most once in a correct log.
type Load struct {
	c      *Cluster
	prefix string
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu struct {
		sync.Mutex
		acked  map[string]uint64 // command -> index
		leader string            // the client's guess
		codes  map[int]int       // answers by HTTP status; 0 is no answer
	}
}

// StartLoad starts clients goroutines writing commands
// "<prefix>-c<client>-<seq>".
func (c *Cluster) StartLoad(prefix string, clients int) *Load {
	l := &Load{c: c, prefix: prefix}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.mu.acked = make(map[string]uint64)
	l.mu.codes = make(map[int]int)
	for i := range clients {
		l.wg.Add(1)
		go l.client(i)
	}
	return l
}

func (l *Load) client(i int) {
	defer l.wg.Done()
	for seq := 0; l.ctx.Err() == nil; seq++ {
		cmd := fmt.Sprintf("%s-c%d-%d", l.prefix, i, seq)
		id := l.leader()
		if id == "" {
			if id, _, _ = l.c.Leader(l.ctx); id == "" {
				l.backoff()
				continue
			}
			l.setLeader(id)
		}
		ctx, cancel := context.WithTimeout(l.ctx, 5*time.Second)
		code, rep, err := l.c.Apply(ctx, id, cmd)
		cancel()
		l.mu.Lock()
		l.mu.codes[code]++
		l.mu.Unlock()
		switch {
		case err == nil && code == http.StatusOK:
			l.mu.Lock()
			l.mu.acked[cmd] = rep.Index
			l.mu.Unlock()
		case err == nil && code == http.StatusMisdirectedRequest && rep.LeaderID != "" && rep.LeaderID != id:
			l.setLeader(rep.LeaderID)
		default:
			l.setLeader("")
			l.backoff()
		}
	}
}

// backoff waits a little before the next attempt, or until Stop.
func (l *Load) backoff() {
	t := time.NewTimer(20 * time.Millisecond)
	defer t.Stop()
	select {
	case <-l.ctx.Done():
	case <-t.C:
	}
}

func (l *Load) leader() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.leader
}

func (l *Load) setLeader(id string) {
	l.mu.Lock()
	l.mu.leader = id
	l.mu.Unlock()
}

// Stop stops the clients, abandoning writes in flight (their outcome is
// unknown), and waits for them. It is safe to call more than once.
func (l *Load) Stop() {
	l.cancel()
	l.wg.Wait()
}

// Acked returns every acknowledged command and the log index the leader
// gave it.
func (l *Load) Acked() map[string]uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.mu.acked)
}

// NumAcked returns the number of acknowledged commands.
func (l *Load) NumAcked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.mu.acked)
}

// Codes returns how many answers came back with each HTTP status; 0
// counts writes that got no answer.
func (l *Load) Codes() map[int]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.mu.codes)
}
