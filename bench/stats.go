package main

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/storage"
	"github.com/graft-raft/graft/transport"
	"github.com/hashicorp/raft"
)

// counters are what the harness sees of a system's batching, summed over
// the cluster's nodes. They come from thin wrappers around the systems'
// log stores (and graft's transport), which only count: one atomic add per
// call.
type counters struct {
	// logWrites counts durable log writes: Append calls of graft's
	// LogStorage (one write and one fsync each), StoreLog(s) calls of
	// hashicorp's LogStore (one bbolt transaction: two fdatasyncs).
	logWrites, logEntries uint64
	// logWriteTime is the time spent in those calls, logWriteHist their
	// latencies.
	logWriteTime time.Duration
	logWriteHist *histogram
	// appendRequests counts AppendEntries requests sent on graft's
	// pipelines; appendEntries the entries they carried. Zero for
	// hashicorp, whose transport the harness does not wrap.
	appendRequests, appendEntries uint64
}

func (c counters) sub(o counters) counters {
	h := *c.logWriteHist
	h.sub(o.logWriteHist)
	return counters{
		logWriteHist:   &h,
		logWrites:      c.logWrites - o.logWrites,
		logEntries:     c.logEntries - o.logEntries,
		logWriteTime:   c.logWriteTime - o.logWriteTime,
		appendRequests: c.appendRequests - o.appendRequests,
		appendEntries:  c.appendEntries - o.appendEntries,
	}
}

type counterSet struct {
	logWrites, logEntries         atomic.Uint64
	logWriteNanos                 atomic.Int64
	mu                            sync.Mutex
	hist                          histogram // guarded by mu
	appendRequests, appendEntries atomic.Uint64
}

func (s *counterSet) load() counters {
	s.mu.Lock()
	h := s.hist
	s.mu.Unlock()
	return counters{
		logWriteHist:   &h,
		logWrites:      s.logWrites.Load(),
		logEntries:     s.logEntries.Load(),
		logWriteTime:   time.Duration(s.logWriteNanos.Load()),
		appendRequests: s.appendRequests.Load(),
		appendEntries:  s.appendEntries.Load(),
	}
}

// write counts one log write of n entries that started at t0.
func (s *counterSet) write(n int, t0 time.Time) {
	s.logWrites.Add(1)
	s.logEntries.Add(uint64(n))
	d := time.Since(t0)
	s.logWriteNanos.Add(int64(d))
	s.mu.Lock()
	s.hist.record(d)
	s.mu.Unlock()
}

// countingLog counts graft's durable log writes.
type countingLog struct {
	storage.LogStorage
	c *counterSet
}

func (l countingLog) Append(entries []*raftpb.Entry) error {
	defer l.c.write(len(entries), time.Now())
	return l.LogStorage.Append(entries)
}

// countingTransport counts the AppendEntries requests graft pipelines.
type countingTransport struct {
	transport.Transport
	c *counterSet
}

func (t countingTransport) Pipeline(ctx context.Context, addr string) (transport.Pipeline, error) {
	p, err := t.Transport.Pipeline(ctx, addr)
	if err != nil {
		return nil, err
	}
	return countingPipeline{p, t.c}, nil
}

type countingPipeline struct {
	transport.Pipeline
	c *counterSet
}

func (p countingPipeline) Send(req *raftpb.AppendEntriesRequest) error {
	p.c.appendRequests.Add(1)
	p.c.appendEntries.Add(uint64(len(req.Entries)))
	return p.Pipeline.Send(req)
}

// countingLogStore counts hashicorp's log writes.
type countingLogStore struct {
	raft.LogStore
	c *counterSet
}

func (s countingLogStore) StoreLog(l *raft.Log) error {
	defer s.c.write(1, time.Now())
	return s.LogStore.StoreLog(l)
}

func (s countingLogStore) StoreLogs(logs []*raft.Log) error {
	defer s.c.write(len(logs), time.Now())
	return s.LogStore.StoreLogs(logs)
}
