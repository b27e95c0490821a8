package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// status is the answer of GET /v1/status.
type status struct {
	ID            string   `json:"id"`
	Role          string   `json:"role"`
	Term          uint64   `json:"term"`
	LeaderID      string   `json:"leader_id"`
	LeaderHTTP    string   `json:"leader_http"`
	CommitIndex   uint64   `json:"commit_index"`
	AppliedIndex  uint64   `json:"applied_index"`
	FirstLogIndex uint64   `json:"first_log_index"`
	LastLogIndex  uint64   `json:"last_log_index"`
	Snapshot      snapInfo `json:"snapshot"`
	Peers         []peer   `json:"peers"`
	OldPeers      []peer   `json:"old_peers"`
	Learners      []peer   `json:"learners"`
}

type snapInfo struct {
	LastIncludedIndex uint64   `json:"last_included_index"`
	LastIncludedTerm  uint64   `json:"last_included_term"`
	State             string   `json:"state"`
	Progress          progress `json:"progress"`
}

type progress struct {
	FilesDone   int64   `json:"files_done"`
	FilesTotal  int64   `json:"files_total"`
	BytesDone   int64   `json:"bytes_done"`
	BytesTotal  int64   `json:"bytes_total"`
	BytesPerSec float64 `json:"bytes_per_sec"`
}

type peer struct {
	ID   string `json:"id"`
	Addr string `json:"addr"`
}

// installing reports whether the node is installing a snapshot from its
// leader (downloading its files or loading them).
func (s *status) installing() bool {
	st := strings.ToUpper(s.Snapshot.State)
	return st == "DOWNLOADING" || st == "LOADING"
}

func peerList(ps []peer) string {
	if len(ps) == 0 {
		return "-"
	}
	var parts []string
	for _, p := range ps {
		parts = append(parts, p.ID+"="+p.Addr)
	}
	return strings.Join(parts, ", ")
}

// printStatus writes s for a human.
func printStatus(w io.Writer, s *status) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	leader := "(unknown)"
	if s.LeaderID != "" {
		leader = s.LeaderID
		if s.LeaderHTTP != "" {
			leader += "  (" + s.LeaderHTTP + ")"
		}
	}
	fmt.Fprintf(tw, "id:\t%s\n", s.ID)
	fmt.Fprintf(tw, "role:\t%s\n", s.Role)
	fmt.Fprintf(tw, "term:\t%d\n", s.Term)
	fmt.Fprintf(tw, "leader:\t%s\n", leader)
	fmt.Fprintf(tw, "commit index:\t%d\n", s.CommitIndex)
	fmt.Fprintf(tw, "applied index:\t%d\n", s.AppliedIndex)
	fmt.Fprintf(tw, "log:\t%d..%d\n", s.FirstLogIndex, s.LastLogIndex)
	fmt.Fprintf(tw, "snapshot:\tindex %d, term %d, %s\n", s.Snapshot.LastIncludedIndex, s.Snapshot.LastIncludedTerm, orDash(s.Snapshot.State))
	if p := s.Snapshot.Progress; p.FilesTotal > 0 || p.BytesTotal > 0 {
		what := "last install"
		if s.installing() {
			what = "install"
		}
		fmt.Fprintf(tw, "%s:\t%s\n", what, progressLine(p))
	}
	fmt.Fprintf(tw, "peers:\t%s\n", peerList(s.Peers))
	if len(s.OldPeers) > 0 {
		fmt.Fprintf(tw, "old peers:\t%s\n", peerList(s.OldPeers))
	}
	if len(s.Learners) > 0 {
		fmt.Fprintf(tw, "learners:\t%s\n", peerList(s.Learners))
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// progressLine describes an install's progress: files, bytes, rate and
// the time left at that rate.
func progressLine(p progress) string {
	s := fmt.Sprintf("files %d/%d, %s/%s", p.FilesDone, p.FilesTotal, humanBytes(float64(p.BytesDone)), humanBytes(float64(p.BytesTotal)))
	if p.BytesPerSec > 0 {
		s += ", " + humanBytes(p.BytesPerSec) + "/s"
		if left := p.BytesTotal - p.BytesDone; left > 0 {
			s += ", ETA " + eta(float64(left)/p.BytesPerSec)
		}
	}
	return s
}

func eta(sec float64) string {
	d := time.Duration(sec * float64(time.Second))
	if d < time.Second {
		return "<1s"
	}
	return d.Round(time.Second).String()
}

// humanBytes formats n in IEC units.
func humanBytes(n float64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%.0f B", n)
	}
	exp, div := 0, float64(unit)
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", n/div, "KMGTPE"[exp])
}

// oneLine is a status in one line, for watch.
func oneLine(s *status) string {
	leader := s.LeaderID
	if leader == "" {
		leader = "?"
	}
	return fmt.Sprintf("%s %s term %d leader %s  commit %d applied %d log %d..%d  snapshot %d %s",
		s.ID, s.Role, s.Term, leader, s.CommitIndex, s.AppliedIndex, s.FirstLogIndex, s.LastLogIndex,
		s.Snapshot.LastIncludedIndex, orDash(s.Snapshot.State))
}
