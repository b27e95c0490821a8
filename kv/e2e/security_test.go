//go:build unix

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/graft-raft/graft/internal/certgen"
	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/transport"
	grpctransport "github.com/graft-raft/graft/transport/grpc"
)

const (
	e2eAPIToken   = "e2e-api-token-4b1f"
	e2eAdminToken = "e2e-admin-token-9c2d"
)

// TestTLSCluster runs three graftkv processes with mutual TLS between
// peers (certificates from graftkv gen-certs), HTTPS and tokens: the
// cluster elects a leader, replicates, redirects to https:// URLs and
// serves graftctl; a node whose certificate another CA signed cannot
// disturb it, and neither can a raft client without the CA's blessing.
func TestTLSCluster(t *testing.T) {
	c := newCluster(t, clusterOptions{tls: true, token: e2eAPIToken})
	dir := t.TempDir()
	apiFile, adminFile := filepath.Join(dir, "api.token"), filepath.Join(dir, "admin.token")
	for f, tok := range map[string]string{apiFile: e2eAPIToken + "\n", adminFile: e2eAdminToken} {
		if err := os.WriteFile(f, []byte(tok), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c.flags = append(c.flags, "--api-token-file", apiFile, "--admin-token-file", adminFile)
	c.start()
	leader := c.waitLeader()
	follower := c.followers(leader)[0]

	// Writes through a follower are redirected to the leader's https URL.
	a := follower.req("PUT", kvPath("k"), nil, []byte("v")).want(t, "PUT on a follower", http.StatusTemporaryRedirect)
	if loc := a.header.Get("Location"); !strings.HasPrefix(loc, "https://"+leader.httpAddr+"/") {
		t.Fatalf("redirect to %q, want the leader's https URL", loc)
	}
	idx := c.put(follower, "k", "v")
	c.waitApplied(idx)
	for _, n := range c.nodes {
		if v, ok, err := c.staleGet(n, "k"); err != nil || !ok || v != "v" {
			t.Fatalf("%s: k = %q, %v, %v", n.id, v, ok, err)
		}
	}
	// Tokens: none is 401, the API token does not open the admin calls.
	code, _, err := c.do(&http.Client{Transport: c.hc.Transport.(bearerTransport).next, Timeout: reqTimeout},
		"GET", leader.url("/v1/status", nil), nil)
	if err != nil || code != http.StatusUnauthorized {
		t.Fatalf("status without a token: %d, %v", code, err)
	}
	leader.req("POST", "/v1/admin/snapshot", nil, nil).want(t, "snapshot with the API token", http.StatusForbidden)

	// graftctl over HTTPS: --cacert makes HOST:PORT https.
	ca := filepath.Join(c.certs, "ca.crt")
	ctlTLS := []string{"--addr", follower.httpAddr, "--cacert", ca}
	ctlWant(t, 0, []string{"OK"}, append(ctlTLS, "--token", e2eAPIToken, "put", "greeting", "hello")...)
	ctlWant(t, 0, []string{"hello"}, append(ctlTLS, "--token", e2eAPIToken, "get", "greeting")...)
	ctlWant(t, 0, []string{"snapshot taken"}, append(ctlTLS, "--token", e2eAdminToken, "snapshot")...)
	ctlWant(t, 1, []string{"403"}, append(ctlTLS, "--token", e2eAPIToken, "snapshot")...)
	ctlWant(t, 1, []string{"401"}, append(ctlTLS, "status")...)
	ctlWant(t, 1, []string{"certificate"}, "--addr", "https://"+follower.httpAddr, "--token", e2eAPIToken, "status")

	// A raft client with a certificate from another CA is refused by every
	// node, for RPCs and for snapshot files.
	rogueDir := filepath.Join(dir, "rogue")
	if err := os.MkdirAll(rogueDir, 0o700); err != nil {
		t.Fatal(err)
	}
	rogueCA, err := certgen.NewCA("rogue CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := rogueCA.Issue("n1", []string{"127.0.0.1"}, certgen.Node, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := pair.WriteFiles(rogueDir, "n1")
	if err != nil {
		t.Fatal(err)
	}
	creds, err := grpctransport.ClientTLS(cert, key, ca) // it even trusts our CA
	if err != nil {
		t.Fatal(err)
	}
	opts := grpctransport.DefaultOptions()
	opts.DialOptions = append(opts.DialOptions, creds)
	tr := grpctransport.New(opts)
	defer tr.Close()
	before := leader.mustStatus().Term
	for _, n := range c.nodes {
		ctx, cancel := context.WithTimeout(context.Background(), reqTimeout)
		_, err := tr.RequestVote(ctx, n.raftAddr, &raftpb.RequestVoteRequest{
			GroupId: "graftkv", ServerId: "n9", PeerId: n.id, Term: before + 100, LastLogIndex: 1 << 40, LastLogTerm: before + 99,
		})
		if !errors.Is(err, transport.ErrUnreachable) {
			t.Errorf("%s: RequestVote with a rogue certificate = %v, want refused", n.id, err)
		}
		_, err = tr.GetFile(ctx, n.raftAddr, &raftpb.GetFileRequest{ReaderId: 1, Filename: "__raft_snapshot_meta", Count: 1 << 20})
		if !errors.Is(err, transport.ErrUnreachable) {
			t.Errorf("%s: GetFile with a rogue certificate = %v, want refused", n.id, err)
		}
		cancel()
	}

	// A node with the rogue CA's certificates that thinks it belongs to
	// the cluster: it campaigns, but its RPCs fail the handshake, and its
	// own port refuses the cluster's. Watch for a few election timeouts.
	rogue := c.addNode("n4")
	rogueCerts := filepath.Join(dir, "rogue-certs")
	genCerts(t, rogueCerts, "--nodes", "n4", "--hosts", "127.0.0.1", "--client", "")
	peers := c.peersFlag(c.nodes...)
	rogue.launch("", []string{"--peers", peers, "--tls-ca", filepath.Join(rogueCerts, "ca.crt"),
		"--tls-cert", filepath.Join(rogueCerts, "n4.crt"), "--tls-key", filepath.Join(rogueCerts, "n4.key")})
	// The rogue serves HTTPS with its own CA: ask it with a client that
	// trusts that CA.
	rogueStatus := func() (*status, error) {
		rc, err := grpctransport.ClientTLSConfig("", "", filepath.Join(rogueCerts, "ca.crt"))
		if err != nil {
			return nil, err
		}
		hc := &http.Client{Timeout: reqTimeout, Transport: bearerTransport{token: e2eAPIToken, next: &http.Transport{TLSClientConfig: rc}}}
		defer hc.CloseIdleConnections()
		var s status
		code, body, err := c.do(hc, "GET", rogue.url("/v1/status", nil), nil)
		if err == nil && code != 200 {
			err = fmt.Errorf("%d %s", code, body)
		}
		if err == nil {
			err = json.Unmarshal(body, &s)
		}
		return &s, err
	}
	waitFor(t, startTimeout, "the rogue node to serve", func() (bool, string) {
		_, err := rogueStatus()
		return err == nil, fmt.Sprint(err)
	})
	watchUntil := time.Now().Add(5 * 600 * time.Millisecond) // five election timeouts
	for time.Now().Before(watchUntil) {
		s, err := rogueStatus()
		if err != nil {
			t.Fatal(err)
		}
		if s.LeaderID != "" || s.isLeader() {
			t.Fatalf("the rogue node found a leader: %+v", s)
		}
		if l, why := c.leaderNow(c.initial()...); l != leader {
			t.Fatalf("the cluster lost its leader %s: %s", leader.id, why)
		}
		time.Sleep(pollInterval) // sampling the cluster while the rogue campaigns
	}
	for _, n := range c.initial() {
		if s := n.mustStatus(); s.Term != before || len(s.Peers) != 3 {
			t.Errorf("%s: term %d (was %d), peers %v: the rogue node disturbed the cluster", n.id, s.Term, before, s.Peers)
		}
	}
}
