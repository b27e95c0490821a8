package kv

import (
	"context"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"sync"
	"time"
)

// pageNode is one row of the status page.
type pageNode struct {
	ID, RaftAddr, HTTP string
	Self               bool
	Status             *Status // nil if it could not be fetched
	Err                string
	// Match is the leader's view of the node's log (0 if unknown).
	Match uint64
}

// Percent returns the install progress in percent.
func (n pageNode) Percent() int {
	p := n.Status.Snapshot.Progress
	if p.BytesTotal <= 0 {
		return 0
	}
	return int(100 * p.BytesDone / p.BytesTotal)
}

// Installing reports whether the node is downloading or loading a snapshot.
func (n pageNode) Installing() bool {
	st := n.Status.Snapshot.State
	return st == "DOWNLOADING" || st == "LOADING"
}

type pageData struct {
	Self    Status
	Nodes   []pageNode
	Members map[string]string
	Now     string
	Scheme  string // of the nodes' URLs
}

// peerStatusTimeout bounds each peer's status fetch for the page.
const peerStatusTimeout = 700 * time.Millisecond

// handlePage renders the cluster as this node sees it: its own status,
// and that of every peer whose HTTP address is recorded, fetched now.
func (s *Server) handlePage(w http.ResponseWriter, r *http.Request) {
	self := s.Status()
	members := s.fsm.Members()
	match := map[string]uint64{}
	for _, f := range s.node.Status().Followers {
		match[f.Peer.ID] = f.MatchIndex
	}
	var nodes []pageNode
	for _, set := range [][]PeerStatus{self.Peers, self.OldPeers, self.Learners} {
		for _, p := range set {
			if !seen(nodes, p.ID) {
				nodes = append(nodes, pageNode{ID: p.ID, RaftAddr: p.Addr, HTTP: members[p.ID], Match: match[p.ID]})
			}
		}
	}
	if !seen(nodes, self.ID) { // a node not (yet) in the configuration
		nodes = append(nodes, pageNode{ID: self.ID})
	}
	var wg sync.WaitGroup
	for i := range nodes {
		n := &nodes[i]
		if n.ID == self.ID {
			n.Self, n.Status, n.HTTP = true, &self, s.cfg.HTTPAddr
			continue
		}
		if n.HTTP == "" {
			n.Err = "HTTP address not recorded yet"
			continue
		}
		wg.Go(func() {
			st, err := s.fetchStatus(r.Context(), n.HTTP)
			if err != nil {
				n.Err = err.Error()
				return
			}
			n.Status = st
		})
	}
	wg.Wait()
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	err := pageTemplate.Execute(w, pageData{Self: self, Nodes: nodes, Members: members, Now: time.Now().Format(time.TimeOnly), Scheme: s.scheme})
	if err != nil {
		s.log.Warn("rendering the status page", "err", err)
	}
}

func seen(nodes []pageNode, id string) bool {
	for _, n := range nodes {
		if n.ID == id {
			return true
		}
	}
	return false
}

func (s *Server) fetchStatus(ctx context.Context, addr string) (*Status, error) {
	ctx, cancel := context.WithTimeout(ctx, peerStatusTimeout)
	defer cancel()
	req, err := s.newPeerRequest(ctx, http.MethodGet, addr, "/v1/status", nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("unreachable: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status: %s", resp.Status)
	}
	var st Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, fmt.Errorf("bad status: %v", err)
	}
	return &st, nil
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

var pageTemplate = template.Must(template.New("page").Funcs(template.FuncMap{
	"bytes": humanBytes,
	"rate":  func(f float64) string { return humanBytes(int64(f)) + "/s" },
}).Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="2">
<title>graftkv {{.Self.ID}} · {{.Self.Role}}</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; margin-bottom: .2em; }
.sub { color: #666; margin-bottom: 1.5em; }
table { border-collapse: collapse; }
th, td { padding: .35em .8em; border-bottom: 1px solid #ddd; text-align: left; white-space: nowrap; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.self td { background: #f0f7ff; }
.role-leader { color: #0a7d28; font-weight: bold; }
.role-candidate { color: #b36b00; }
.role-shutdown, .err { color: #b00020; }
progress { width: 12em; }
.muted { color: #888; }
</style>
</head>
<body>
<h1>graftkv cluster</h1>
<div class="sub">
This page: <b id="self-id">{{.Self.ID}}</b>, <span id="self-role" class="role-{{.Self.Role}}">{{.Self.Role}}</span>,
term <span id="self-term">{{.Self.Term}}</span>, applied index <span id="self-applied">{{.Self.AppliedIndex}}</span>.
Leader: {{if .Self.LeaderID}}<b id="leader">{{.Self.LeaderID}}</b>{{if .Self.LeaderHTTP}} (<a href="{{$.Scheme}}://{{.Self.LeaderHTTP}}/">{{.Self.LeaderHTTP}}</a>){{end}}{{else}}<span id="leader" class="err">none known</span>{{end}}.
Refreshed {{.Now}}, every 2s.
</div>
<table id="nodes">
<thead><tr>
<th>node</th><th>role</th><th>term</th><th>commit</th><th>applied</th><th>log</th>
<th>snapshot</th><th>install</th><th>raft</th><th>http</th>
</tr></thead>
<tbody>
{{range .Nodes}}
<tr id="node-{{.ID}}"{{if .Self}} class="self"{{end}}>
<td><b>{{.ID}}</b>{{if .Self}} <span class="muted">(this node)</span>{{end}}</td>
{{with .Status}}
<td class="role role-{{.Role}}">{{.Role}}</td>
<td class="num">{{.Term}}</td>
<td class="num commit">{{.CommitIndex}}</td>
<td class="num applied">{{.AppliedIndex}}</td>
<td class="num">{{.FirstLogIndex}}–{{.LastLogIndex}}</td>
<td>{{.Snapshot.LastIncludedIndex}} <span class="muted">{{.Snapshot.State}}</span></td>
{{else}}
<td class="err" colspan="6">{{$.Self.ID}} cannot see it: {{.Err}}{{if .Match}}; its log matches the leader's up to {{.Match}}{{end}}</td>
{{end}}
<td class="install">{{if and .Status .Installing}}{{$p := .Status.Snapshot.Progress}}
<progress max="{{$p.BytesTotal}}" value="{{$p.BytesDone}}"></progress> {{.Percent}}%<br>
<span class="muted">{{$p.FilesDone}}/{{$p.FilesTotal}} files, {{bytes $p.BytesDone}} of {{bytes $p.BytesTotal}}, {{rate $p.BytesPerSec}}</span>
{{else}}<span class="muted">–</span>{{end}}</td>
<td>{{.RaftAddr}}</td>
<td>{{if .HTTP}}<a href="{{$.Scheme}}://{{.HTTP}}/">{{.HTTP}}</a>{{else}}<span class="muted">unknown</span>{{end}}</td>
</tr>
{{end}}
</tbody>
</table>
</body>
</html>
`))
