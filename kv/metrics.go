package kv

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/graft-raft/graft"
	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/snapshot"
	"github.com/graft-raft/graft/storage"
	"github.com/graft-raft/graft/vfs"
)

// metrics are one Server's Prometheus metrics, in a registry of its own
// (a process may run several servers, as the demo does).
type metrics struct {
	reg *prometheus.Registry

	apply     *prometheus.HistogramVec // op
	logAppend prometheus.Histogram
	logFsync  prometheus.Histogram
	requests  *prometheus.CounterVec // method, code

	saveSeconds       prometheus.Histogram
	checkpointSeconds prometheus.Histogram
	saveBytes         prometheus.Gauge
	saves             *prometheus.CounterVec // result
	loadSeconds       prometheus.Histogram
	loadBytes         *prometheus.CounterVec // how: linked, copied
	installSeconds    prometheus.Histogram
	installBytes      *prometheus.CounterVec // how: fetched, reused
}

// Latency buckets from 100µs to ~26s.
var latencyBuckets = prometheus.ExponentialBuckets(0.0001, 2, 19)

// Snapshot duration buckets from 1ms to ~9 minutes.
var snapshotBuckets = prometheus.ExponentialBuckets(0.001, 2.5, 15)

func newMetrics(statusFn func() graft.Status) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.apply = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "graftkv_apply_duration_seconds",
		Help:    "Time from proposing a write on the leader until it is committed and applied, by operation.",
		Buckets: latencyBuckets,
	}, []string{"op"})
	m.logAppend = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "graftkv_raft_log_append_duration_seconds",
		Help:    "Time to append a batch of entries to the raft log durably (write and fsync).",
		Buckets: latencyBuckets,
	})
	m.logFsync = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "graftkv_raft_log_fsync_duration_seconds",
		Help:    "Time of each fsync of a raft log file or directory.",
		Buckets: latencyBuckets,
	})
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "graftkv_http_requests_total",
		Help: "HTTP requests served, by method and status code.",
	}, []string{"method", "code"})
	m.saveSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "graftkv_snapshot_save_duration_seconds",
		Help:    "Time to save a snapshot: checkpoint, sync and checksum of its files.",
		Buckets: snapshotBuckets,
	})
	m.checkpointSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "graftkv_snapshot_checkpoint_duration_seconds",
		Help:    "Time the apply loop is held by a snapshot save (memtable flush and pebble checkpoint).",
		Buckets: snapshotBuckets,
	})
	m.saveBytes = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "graftkv_snapshot_save_bytes",
		Help: "Size of the last snapshot saved, in bytes.",
	})
	m.saves = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "graftkv_snapshot_saves_total",
		Help: "Snapshot saves, by result.",
	}, []string{"result"})
	m.loadSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "graftkv_snapshot_load_duration_seconds",
		Help:    "Time to load a snapshot into pebble (at startup or after an install).",
		Buckets: snapshotBuckets,
	})
	m.loadBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "graftkv_snapshot_load_bytes_total",
		Help: "Bytes of snapshot files loaded into pebble, by how: linked (SSTs, free) or copied.",
	}, []string{"how"})
	m.installSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "graftkv_snapshot_install_duration_seconds",
		Help:    "Time to install a snapshot from the leader: download and load.",
		Buckets: snapshotBuckets,
	})
	m.installBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "graftkv_snapshot_install_bytes_total",
		Help: "Bytes of installed snapshots, by how: fetched from the leader or reused from local files.",
	}, []string{"how"})
	m.reg.MustRegister(
		m.apply, m.logAppend, m.logFsync, m.requests,
		m.saveSeconds, m.checkpointSeconds, m.saveBytes, m.saves,
		m.loadSeconds, m.loadBytes, m.installSeconds, m.installBytes,
		statusCollector{statusFn},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

func (m *metrics) saved(info SaveInfo) {
	if info.Err != nil {
		m.saves.WithLabelValues("failed").Inc()
		return
	}
	m.saves.WithLabelValues("ok").Inc()
	m.saveSeconds.Observe(info.Duration.Seconds())
	m.checkpointSeconds.Observe(info.Checkpoint.Seconds())
	m.saveBytes.Set(float64(info.Bytes))
}

func (m *metrics) loaded(info LoadInfo) {
	m.loadSeconds.Observe(info.Duration.Seconds())
	m.loadBytes.WithLabelValues("linked").Add(float64(info.Linked))
	m.loadBytes.WithLabelValues("copied").Add(float64(info.Bytes - info.Linked))
}

// installed records an install that finished loading at end, with the
// progress graft kept of its download.
func (m *metrics) installed(end time.Time, p snapshot.ProgressInfo) {
	if p.Started.IsZero() || end.Before(p.Started) {
		return
	}
	m.installSeconds.Observe(end.Sub(p.Started).Seconds())
	m.installBytes.WithLabelValues("fetched").Add(float64(p.BytesFetched))
	m.installBytes.WithLabelValues("reused").Add(float64(p.BytesReused))
}

// statusCollector turns one Node.Status per scrape into gauges.
type statusCollector struct{ status func() graft.Status }

var (
	roleDesc     = prometheus.NewDesc("graftkv_raft_role", "1 for the node's current role, 0 for the others.", []string{"role"}, nil)
	termDesc     = prometheus.NewDesc("graftkv_raft_term", "Current raft term.", nil, nil)
	commitDesc   = prometheus.NewDesc("graftkv_raft_commit_index", "Highest log index known committed.", nil, nil)
	appliedDesc  = prometheus.NewDesc("graftkv_raft_applied_index", "Highest log index applied to the state machine.", nil, nil)
	firstDesc    = prometheus.NewDesc("graftkv_raft_first_log_index", "First index in the log (older entries are in the snapshot).", nil, nil)
	lastDesc     = prometheus.NewDesc("graftkv_raft_last_log_index", "Last index in the log.", nil, nil)
	leaderDesc   = prometheus.NewDesc("graftkv_raft_has_leader", "1 if the node knows a leader.", nil, nil)
	snapIdxDesc  = prometheus.NewDesc("graftkv_snapshot_last_index", "Last log index covered by the newest snapshot.", nil, nil)
	snapStDesc   = prometheus.NewDesc("graftkv_snapshot_state", "1 for the snapshot executor's current state, 0 for the others.", []string{"state"}, nil)
	instFilesD   = prometheus.NewDesc("graftkv_snapshot_install_files_done", "Files complete in the current (or last) snapshot install.", nil, nil)
	instFilesT   = prometheus.NewDesc("graftkv_snapshot_install_files", "Files in the current (or last) snapshot install.", nil, nil)
	instBytesD   = prometheus.NewDesc("graftkv_snapshot_install_done_bytes", "Bytes complete in the current (or last) snapshot install.", nil, nil)
	instBytesT   = prometheus.NewDesc("graftkv_snapshot_install_size_bytes", "Total bytes of the current (or last) snapshot install.", nil, nil)
	instRateDesc = prometheus.NewDesc("graftkv_snapshot_install_bytes_per_second", "Download rate of the current (or last) snapshot install.", nil, nil)
)

func (c statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{roleDesc, termDesc, commitDesc, appliedDesc, firstDesc, lastDesc, leaderDesc,
		snapIdxDesc, snapStDesc, instFilesD, instFilesT, instBytesD, instBytesT, instRateDesc} {
		ch <- d
	}
}

func (c statusCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.status()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, r := range []graft.Role{graft.Follower, graft.Candidate, graft.Leader, graft.Shutdown} {
		gauge(roleDesc, b2f(st.Role == r), r.String())
	}
	gauge(termDesc, float64(st.Term))
	gauge(commitDesc, float64(st.CommitIndex))
	gauge(appliedDesc, float64(st.AppliedIndex))
	gauge(firstDesc, float64(st.FirstIndex))
	gauge(lastDesc, float64(st.LastIndex))
	gauge(leaderDesc, b2f(st.Leader.ID != ""))
	gauge(snapIdxDesc, float64(st.Snapshot.LastIndex))
	for _, s := range []graft.SnapshotState{graft.SnapshotIdle, graft.SnapshotSaving, graft.SnapshotDownloading, graft.SnapshotLoading} {
		gauge(snapStDesc, b2f(st.Snapshot.State == s), s.String())
	}
	p := st.Snapshot.Progress
	gauge(instFilesD, float64(p.FilesDone))
	gauge(instFilesT, float64(p.FilesTotal))
	gauge(instBytesD, float64(p.BytesDone))
	gauge(instBytesT, float64(p.BytesTotal))
	gauge(instRateDesc, p.BytesPerSec)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// timedLog measures each durable append of a LogStorage.
type timedLog struct {
	storage.LogStorage
	h prometheus.Histogram
}

func (l timedLog) Append(entries []*raftpb.Entry) error {
	start := time.Now()
	err := l.LogStorage.Append(entries)
	l.h.Observe(time.Since(start).Seconds())
	return err
}

// timedFS measures every Sync of the files it opens.
type timedFS struct {
	vfs.FS
	h prometheus.Histogram
}

func (fs timedFS) wrap(f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return nil, err
	}
	return timedFile{f, fs.h}, nil
}

func (fs timedFS) Create(name string) (vfs.File, error)  { return fs.wrap(fs.FS.Create(name)) }
func (fs timedFS) Open(name string) (vfs.File, error)    { return fs.wrap(fs.FS.Open(name)) }
func (fs timedFS) OpenRW(name string) (vfs.File, error)  { return fs.wrap(fs.FS.OpenRW(name)) }
func (fs timedFS) OpenDir(name string) (vfs.File, error) { return fs.wrap(fs.FS.OpenDir(name)) }

type timedFile struct {
	vfs.File
	h prometheus.Histogram
}

func (f timedFile) Sync() error {
	start := time.Now()
	err := f.File.Sync()
	f.h.Observe(time.Since(start).Seconds())
	return err
}
