package kv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/graft-raft/graft"
	"github.com/graft-raft/graft/internal/conf"
)

// kvPrefix starts the key routes. The package documentation lists the
// whole API; besides it, POST /v1/internal/members {"id", "http"} is how a
// follower asks the leader to record its HTTP address (see announce).
const kvPrefix = "/v1/kv/"

// errorResponse is the body of every error: {"error": "..."}.
type errorResponse struct {
	Error string `json:"error"`
}

// indexResponse answers a write or a snapshot: the log index it took.
type indexResponse struct {
	Index uint64 `json:"index"`
}

// memberRequest is the body of POST /v1/internal/members.
type memberRequest struct {
	ID   string `json:"id"`
	HTTP string `json:"http"`
}

func (s *Server) routes() http.Handler {
	metricsHandler := promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{})
	type route struct {
		method string
		h      http.HandlerFunc
	}
	exact := map[string]route{
		"/v1/status":                {http.MethodGet, s.handleStatus},
		"/v1/admin/snapshot":        {http.MethodPost, s.handleSnapshot},
		"/v1/admin/transfer-leader": {http.MethodPost, s.handleTransferLeader},
		"/v1/admin/peers":           {http.MethodPost, s.handlePeers},
		"/v1/internal/members":      {http.MethodPost, s.handleMember},
		"/metrics":                  {http.MethodGet, metricsHandler.ServeHTTP},
		"/":                         {http.MethodGet, s.handlePage},
	}
	// Keys are taken from the path as sent (percent-decoded once), so
	// they are routed by hand: http.ServeMux would clean "a//b" or "../".
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rw := &statusWriter{ResponseWriter: w}
		defer func() { s.metrics.requests.WithLabelValues(r.Method, strconv.Itoa(rw.code())).Inc() }()
		if !s.guard.check(rw, r, accessOf(r.URL.Path)) {
			return
		}
		if key, ok := strings.CutPrefix(r.URL.Path, kvPrefix); ok {
			switch r.Method {
			case http.MethodGet, http.MethodHead:
				s.handleGet(rw, r, key)
			case http.MethodPut:
				s.handlePut(rw, r, key)
			case http.MethodDelete:
				s.handleDelete(rw, r, key)
			default:
				rw.Header().Set("Allow", "GET, HEAD, PUT, DELETE")
				writeError(rw, http.StatusMethodNotAllowed, "method %s not allowed on %s{key}", r.Method, kvPrefix)
			}
			return
		}
		rt, ok := exact[r.URL.Path]
		switch {
		case !ok:
			writeError(rw, http.StatusNotFound, "no such endpoint: %s", r.URL.Path)
		case r.Method == rt.method || (rt.method == http.MethodGet && r.Method == http.MethodHead):
			rt.h(rw, r)
		default:
			rw.Header().Set("Allow", rt.method)
			writeError(rw, http.StatusMethodNotAllowed, "method %s not allowed on %s (use %s)", r.Method, r.URL.Path, rt.method)
		}
	})
}

// statusWriter remembers the status code, for the request counter.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) code() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, format string, args ...any) {
	if code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, code, errorResponse{Error: fmt.Sprintf(format, args...)})
}

// quoteKey renders a key for an error message, shortened.
func quoteKey(k string) string {
	const max = 64
	if len(k) > max {
		return strconv.Quote(k[:max]) + "..."
	}
	return strconv.Quote(k)
}

// Limits of the JSON bodies of the admin and internal calls, in bytes.
const (
	maxPeersBody  = 1 << 20
	maxMemberBody = 64 << 10
)

// readBody reads r's body, answering 413 and returning false if it is
// over limit bytes: it stops reading there, and the server closes the
// connection rather than read the rest (http.MaxBytesReader).
func readBody(w http.ResponseWriter, r *http.Request, limit int64, what string) ([]byte, bool) {
	if r.ContentLength > limit {
		writeError(w, http.StatusRequestEntityTooLarge, "%s is %d bytes, over the limit of %d bytes", what, r.ContentLength, limit)
		return nil, false
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		writeError(w, http.StatusRequestEntityTooLarge, "%s is over the limit of %d bytes", what, limit)
		return nil, false
	case err != nil:
		writeError(w, http.StatusBadRequest, "reading the %s: %v", what, err)
		return nil, false
	}
	return b, true
}

// decodeOne decodes exactly one JSON value: trailing data is an error.
func decodeOne(dec *json.Decoder, v any) error {
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("data after the JSON value")
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON value")
	}
	return nil
}

// query parses r's query string, answering 400 and returning false if it
// is malformed, names a parameter not in allowed, or repeats one: a
// misspelt or mangled condition must not turn into an unconditional write.
func query(w http.ResponseWriter, r *http.Request, allowed ...string) (url.Values, bool) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		writeError(w, http.StatusBadRequest, "malformed query %q: %v", r.URL.RawQuery, err)
		return nil, false
	}
	for k, vs := range q {
		known := false
		for _, a := range allowed {
			known = known || k == a
		}
		switch {
		case !known && len(allowed) == 0:
			writeError(w, http.StatusBadRequest, "unknown query parameter %q: %s takes none", k, r.URL.Path)
			return nil, false
		case !known:
			writeError(w, http.StatusBadRequest, "unknown query parameter %q (%s takes %s)", k, r.URL.Path, strings.Join(allowed, ", "))
			return nil, false
		case len(vs) > 1:
			writeError(w, http.StatusBadRequest, "query parameter %q given %d times", k, len(vs))
			return nil, false
		}
	}
	return q, true
}

// checkKey answers 400 and returns false for an empty or oversized key.
func (s *Server) checkKey(w http.ResponseWriter, key string) bool {
	switch {
	case key == "":
		writeError(w, http.StatusBadRequest, "empty key: use %s{key}", kvPrefix)
		return false
	case len(key) > s.cfg.MaxKeySize:
		writeError(w, http.StatusBadRequest, "key is %d bytes, over the limit of %d bytes", len(key), s.cfg.MaxKeySize)
		return false
	}
	return true
}

// redirect sends the client to the leader's same URL (307, which keeps
// the method and body), or answers 503 when it cannot.
func (s *Server) redirect(w http.ResponseWriter, r *http.Request) {
	id, addr := s.leader()
	if id != "" && id != s.cfg.ID && addr == "" {
		// A new leader records its HTTP address within moments of its
		// election: wait for it rather than answer 503 with a leader known.
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		deadline := time.Now().Add(time.Second)
		for addr == "" && id != "" && time.Now().Before(deadline) {
			select {
			case <-r.Context().Done():
				deadline = time.Time{}
			case <-t.C:
			}
			id, addr = s.leader()
		}
	}
	switch {
	case id == "" || id == s.cfg.ID:
		writeError(w, http.StatusServiceUnavailable, "no leader known (election in progress?); retry shortly")
	case addr == "":
		writeError(w, http.StatusServiceUnavailable, "the leader %s has not recorded its HTTP address yet; retry shortly", id)
	default:
		loc := s.scheme + "://" + addr + r.URL.RequestURI()
		w.Header().Set("Location", loc)
		writeError(w, http.StatusTemporaryRedirect, "not the leader; the leader is %s at %s", id, loc)
	}
}

// writeNodeError answers a failed graft call.
func (s *Server) writeNodeError(w http.ResponseWriter, r *http.Request, what string, err error) {
	switch {
	case errors.Is(err, graft.ErrNotLeader):
		s.redirect(w, r)
	case errors.Is(err, graft.ErrTooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, "%s: %v", what, err)
	case errors.Is(err, graft.ErrBusy):
		writeError(w, http.StatusConflict, "%s: %v", what, err)
	case errors.Is(err, graft.ErrInvalidChange):
		writeError(w, http.StatusBadRequest, "%s: %v", what, err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, graft.ErrCatchUpTimeout):
		writeError(w, http.StatusGatewayTimeout, "%s: %v (a write may still be applied)", what, err)
	case errors.Is(err, graft.ErrShutdown), errors.Is(err, graft.ErrLeadershipLost), errors.Is(err, graft.ErrTransferFailed),
		errors.Is(err, context.Canceled):
		writeError(w, http.StatusServiceUnavailable, "%s: %v", what, err)
	default:
		writeError(w, http.StatusInternalServerError, "%s: %v", what, err)
	}
}

func (s *Server) requestContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
}

// propose replicates c and returns its index and outcome, or answers the
// error itself and returns ok=false.
func (s *Server) propose(w http.ResponseWriter, r *http.Request, c Command) (uint64, Code, bool) {
	ctx, cancel := s.requestContext(r)
	defer cancel()
	start := time.Now()
	res, err := s.node.Apply(ctx, c.Encode(nil))
	if err != nil {
		s.writeNodeError(w, r, c.Op.String(), err)
		return 0, 0, false
	}
	s.metrics.apply.WithLabelValues(c.Op.String()).Observe(time.Since(start).Seconds())
	code, _ := res.Result.(Code)
	return res.Index, code, true
}

func (s *Server) handlePut(w http.ResponseWriter, r *http.Request, key string) {
	if !s.checkKey(w, key) {
		return
	}
	q, ok := query(w, r, "prev", "prev-exist")
	if !ok {
		return
	}
	c := Command{Op: OpPut, Key: []byte(key)}
	if prev, ok := q["prev"]; ok {
		if len(prev[0]) > s.cfg.MaxValueSize {
			writeError(w, http.StatusBadRequest, "prev is %d bytes, over the value limit of %d bytes", len(prev[0]), s.cfg.MaxValueSize)
			return
		}
		c.Op, c.Prev = OpPutIfPrev, []byte(prev[0])
	}
	if pe, ok := q["prev-exist"]; ok {
		switch {
		case pe[0] != "false":
			writeError(w, http.StatusBadRequest, "prev-exist=%q: only prev-exist=false (create only) is supported", pe[0])
			return
		case c.Op == OpPutIfPrev:
			writeError(w, http.StatusBadRequest, "prev and prev-exist=false contradict each other")
			return
		}
		c.Op = OpCreate
	}
	if r.ContentLength > int64(s.cfg.MaxValueSize) {
		writeError(w, http.StatusRequestEntityTooLarge, "value is %d bytes, over the limit of %d bytes", r.ContentLength, s.cfg.MaxValueSize)
		return
	}
	if !s.node.IsLeader() {
		s.redirect(w, r)
		return
	}
	value, ok := readBody(w, r, int64(s.cfg.MaxValueSize), "value")
	if !ok {
		return
	}
	c.Value = value
	index, code, ok := s.propose(w, r, c)
	if !ok {
		return
	}
	switch code {
	case CodeOK:
		writeJSON(w, http.StatusOK, indexResponse{Index: index})
	case CodeMismatch:
		writeError(w, http.StatusPreconditionFailed, "compare failed: the value of %s is not prev", quoteKey(key))
	case CodeNotFound:
		writeError(w, http.StatusPreconditionFailed, "compare failed: %s does not exist", quoteKey(key))
	case CodeExists:
		writeError(w, http.StatusPreconditionFailed, "%s already exists (prev-exist=false)", quoteKey(key))
	default:
		writeError(w, http.StatusInternalServerError, "unexpected outcome %v", code)
	}
}

func (s *Server) handleDelete(w http.ResponseWriter, r *http.Request, key string) {
	if !s.checkKey(w, key) {
		return
	}
	if _, ok := query(w, r); !ok {
		return
	}
	if !s.node.IsLeader() {
		s.redirect(w, r)
		return
	}
	index, code, ok := s.propose(w, r, Command{Op: OpDelete, Key: []byte(key)})
	if !ok {
		return
	}
	if code == CodeNotFound {
		writeError(w, http.StatusNotFound, "key %s not found", quoteKey(key))
		return
	}
	writeJSON(w, http.StatusOK, indexResponse{Index: index})
}

func (s *Server) handleGet(w http.ResponseWriter, r *http.Request, key string) {
	if !s.checkKey(w, key) {
		return
	}
	q, ok := query(w, r, "consistency")
	if !ok {
		return
	}
	switch c := q.Get("consistency"); c {
	case "stale":
	case "", "linearizable":
		if !s.node.IsLeader() {
			s.redirect(w, r)
			return
		}
		ctx, cancel := s.requestContext(r)
		_, err := s.node.ReadIndex(ctx) // returns once this node has applied the read index
		cancel()
		if err != nil {
			s.writeNodeError(w, r, "read index", err)
			return
		}
	default:
		writeError(w, http.StatusBadRequest, "consistency=%q: use stale, or nothing for a linearizable read", c)
		return
	}
	v, ok, err := s.fsm.Get([]byte(key))
	switch {
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, "read: %v", err)
	case !ok:
		writeError(w, http.StatusNotFound, "key %s not found", quoteKey(key))
	default:
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(v)))
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			_, _ = w.Write(v)
		}
	}
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.Status())
}

func (s *Server) handleSnapshot(w http.ResponseWriter, r *http.Request) {
	// A snapshot is local to each node: no redirect. Saving can take a
	// while on a large store, so no RequestTimeout; the client may hang up.
	if _, ok := query(w, r); !ok {
		return
	}
	index, err := s.node.Snapshot(r.Context())
	if err != nil {
		s.writeNodeError(w, r, "snapshot", err)
		return
	}
	writeJSON(w, http.StatusOK, indexResponse{Index: index})
}

func (s *Server) handleTransferLeader(w http.ResponseWriter, r *http.Request) {
	q, ok := query(w, r, "to")
	if !ok {
		return
	}
	to := q.Get("to")
	if to != "" && !s.node.Status().Configuration.IsVoter(to) {
		writeError(w, http.StatusBadRequest, "to=%q is not a voter of the cluster", to)
		return
	}
	if !s.node.IsLeader() {
		s.redirect(w, r)
		return
	}
	ctx, cancel := s.requestContext(r)
	defer cancel()
	if err := s.node.TransferLeadership(ctx, to); err != nil {
		s.writeNodeError(w, r, "transfer leadership", err)
		return
	}
	id, _ := s.leader()
	writeJSON(w, http.StatusOK, struct {
		LeaderID string `json:"leader_id"`
	}{id})
}

// peersRequest is the body of POST /v1/admin/peers: exactly one field.
type peersRequest struct {
	Add    *peerArg  `json:"add"`
	Remove *string   `json:"remove"`
	Change []peerArg `json:"change"`
}

// peerArg is a peer in a request: {"id": ..., "addr": ...} or "id=addr".
type peerArg struct {
	ID   string `json:"id"`
	Addr string `json:"addr"`
}

func (p *peerArg) UnmarshalJSON(b []byte) error {
	var str string
	if json.Unmarshal(b, &str) == nil {
		peer, err := conf.ParsePeer(str)
		if err != nil {
			return err
		}
		*p = peerArg{ID: peer.ID, Addr: peer.Addr}
		return nil
	}
	type plain peerArg
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode((*plain)(p))
}

func (p peerArg) peer() (graft.Peer, error) {
	if p.ID == "" || p.Addr == "" {
		return graft.Peer{}, fmt.Errorf("peer %q=%q needs an id and an addr", p.ID, p.Addr)
	}
	if _, _, err := net.SplitHostPort(p.Addr); err != nil {
		return graft.Peer{}, fmt.Errorf("peer %s: addr %q is not host:port", p.ID, p.Addr)
	}
	return graft.Peer{ID: p.ID, Addr: p.Addr}, nil
}

func (s *Server) handlePeers(w http.ResponseWriter, r *http.Request) {
	if _, ok := query(w, r); !ok {
		return
	}
	body, ok := readBody(w, r, maxPeersBody, "body")
	if !ok {
		return
	}
	var req peersRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := decodeOne(dec, &req); err != nil {
		writeError(w, http.StatusBadRequest, `bad body: %v; want {"add": {"id": ..., "addr": ...}}, {"remove": "ID"} or {"change": [{"id": ..., "addr": ...}, ...]}`, err)
		return
	}
	n := 0
	for _, set := range []bool{req.Add != nil, req.Remove != nil, req.Change != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		writeError(w, http.StatusBadRequest, `give exactly one of "add", "remove" and "change"`)
		return
	}
	var op func(ctx context.Context) error
	switch {
	case req.Add != nil:
		p, err := req.Add.peer()
		if err != nil {
			writeError(w, http.StatusBadRequest, "add: %v", err)
			return
		}
		op = func(ctx context.Context) error { return s.node.AddPeer(ctx, p) }
	case req.Remove != nil:
		if *req.Remove == "" {
			writeError(w, http.StatusBadRequest, "remove: empty peer id")
			return
		}
		op = func(ctx context.Context) error { return s.node.RemovePeer(ctx, *req.Remove) }
	default:
		var peers []graft.Peer
		for _, a := range req.Change {
			p, err := a.peer()
			if err != nil {
				writeError(w, http.StatusBadRequest, "change: %v", err)
				return
			}
			peers = append(peers, p)
		}
		if err := (graft.Configuration{Peers: peers}).Validate(); err != nil || len(peers) == 0 {
			writeError(w, http.StatusBadRequest, "change: %d peers: %v", len(peers), err)
			return
		}
		op = func(ctx context.Context) error { return s.node.ChangePeers(ctx, peers) }
	}
	if !s.node.IsLeader() {
		s.redirect(w, r)
		return
	}
	// A change waits for new peers to catch up; allow it more time.
	ctx, cancel := context.WithTimeout(r.Context(), 6*s.cfg.RequestTimeout)
	defer cancel()
	if err := op(ctx); err != nil {
		s.writeNodeError(w, r, "change peers", err)
		return
	}
	c := s.node.Status().Configuration
	writeJSON(w, http.StatusOK, struct {
		Peers    []PeerStatus `json:"peers"`
		OldPeers []PeerStatus `json:"old_peers"`
		Learners []PeerStatus `json:"learners"`
	}{peerStatuses(c.Peers), peerStatuses(c.OldPeers), peerStatuses(c.Learners)})
}

func (s *Server) handleMember(w http.ResponseWriter, r *http.Request) {
	if _, ok := query(w, r); !ok {
		return
	}
	body, ok := readBody(w, r, maxMemberBody, "body")
	if !ok {
		return
	}
	var req memberRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := decodeOne(dec, &req); err != nil {
		writeError(w, http.StatusBadRequest, `bad body: %v; want {"id": ..., "http": "host:port"}`, err)
		return
	}
	if _, _, err := net.SplitHostPort(req.HTTP); err != nil {
		writeError(w, http.StatusBadRequest, "http %q is not host:port", req.HTTP)
		return
	}
	if !s.node.IsLeader() {
		s.redirect(w, r)
		return
	}
	if !s.node.Status().Configuration.Contains(req.ID) {
		writeError(w, http.StatusBadRequest, "%q is not a member of the cluster", req.ID)
		return
	}
	index, _, ok := s.propose(w, r, Command{Op: OpSetMember, Key: []byte(req.ID), Value: []byte(req.HTTP)})
	if ok {
		writeJSON(w, http.StatusOK, indexResponse{Index: index})
	}
}
