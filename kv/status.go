package kv

import "github.com/graft-raft/graft"

// Status is the JSON document of GET /v1/status. Clients decode it with
// encoding/json; the field names are part of graftkv's interface.
type Status struct {
	ID            string         `json:"id"`
	Role          string         `json:"role"` // follower, candidate, leader or shutdown
	Term          uint64         `json:"term"`
	LeaderID      string         `json:"leader_id"`   // "" when no leader is known
	LeaderHTTP    string         `json:"leader_http"` // the leader's HTTP host:port, "" if not known
	CommitIndex   uint64         `json:"commit_index"`
	AppliedIndex  uint64         `json:"applied_index"`
	FirstLogIndex uint64         `json:"first_log_index"`
	LastLogIndex  uint64         `json:"last_log_index"`
	Snapshot      SnapshotStatus `json:"snapshot"`
	Peers         []PeerStatus   `json:"peers"`
	OldPeers      []PeerStatus   `json:"old_peers"` // non-empty during a joint configuration change
	Learners      []PeerStatus   `json:"learners"`
}

// SnapshotStatus is the snapshot part of Status.
type SnapshotStatus struct {
	LastIncludedIndex uint64 `json:"last_included_index"`
	LastIncludedTerm  uint64 `json:"last_included_term"`
	// State is IDLE, SAVING, DOWNLOADING or LOADING.
	State string `json:"state"`
	// Progress is that of the install under way, or of the last one.
	Progress InstallProgress `json:"progress"`
}

// InstallProgress is a snapshot install's progress.
type InstallProgress struct {
	FilesDone   int     `json:"files_done"`
	FilesTotal  int     `json:"files_total"`
	BytesDone   int64   `json:"bytes_done"`
	BytesTotal  int64   `json:"bytes_total"`
	BytesPerSec float64 `json:"bytes_per_sec"`
}

// PeerStatus is a member of the configuration: its id and raft address.
type PeerStatus struct {
	ID   string `json:"id"`
	Addr string `json:"addr"`
}

// Status returns this node's status, as GET /v1/status serves it.
func (s *Server) Status() Status {
	st := s.node.Status()
	out := Status{
		ID:            st.ID,
		Role:          st.Role.String(),
		Term:          st.Term,
		LeaderID:      st.Leader.ID,
		CommitIndex:   st.CommitIndex,
		AppliedIndex:  st.AppliedIndex,
		FirstLogIndex: st.FirstIndex,
		LastLogIndex:  st.LastIndex,
		Snapshot: SnapshotStatus{
			LastIncludedIndex: st.Snapshot.LastIndex,
			LastIncludedTerm:  st.Snapshot.LastTerm,
			State:             st.Snapshot.State.String(),
			Progress: InstallProgress{
				FilesDone:   st.Snapshot.Progress.FilesDone,
				FilesTotal:  st.Snapshot.Progress.FilesTotal,
				BytesDone:   st.Snapshot.Progress.BytesDone,
				BytesTotal:  st.Snapshot.Progress.BytesTotal,
				BytesPerSec: st.Snapshot.Progress.BytesPerSec,
			},
		},
		Peers:    peerStatuses(st.Configuration.Peers),
		OldPeers: peerStatuses(st.Configuration.OldPeers),
		Learners: peerStatuses(st.Configuration.Learners),
	}
	if st.Leader.ID != "" {
		out.LeaderHTTP, _ = s.fsm.Member(st.Leader.ID)
	}
	return out
}

// peerStatuses converts peers; never nil, so that JSON shows [].
func peerStatuses(ps []graft.Peer) []PeerStatus {
	out := make([]PeerStatus, 0, len(ps))
	for _, p := range ps {
		out = append(out, PeerStatus{ID: p.ID, Addr: p.Addr})
	}
	return out
}
