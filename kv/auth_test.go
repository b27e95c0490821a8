package kv

import (
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/graft-raft/graft/internal/certgen"
	"github.com/graft-raft/graft/transport"
	"github.com/graft-raft/graft/transport/memory"
)

// doAuth is do with an Authorization header ("" for none).
func doAuth(t *testing.T, client *http.Client, method, url, body, auth string) (int, http.Header, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

const (
	apiToken   = "api-7f3c9e1d2b"
	adminToken = "admin-5a8e2c4f6d"
)

// TestTokens checks who may call what with each combination of tokens:
// 401 without a bearer token, 403 with a wrong one.
func TestTokens(t *testing.T) {
	type call struct{ method, path, body string }
	kvCall := call{"PUT", "/v1/kv/k", "v"}
	readCall := call{"GET", "/v1/kv/k?consistency=stale", ""}
	statusCall := call{"GET", "/v1/status", ""}
	metricsCall := call{"GET", "/metrics", ""}
	pageCall := call{"GET", "/", ""}
	adminCall := call{"POST", "/v1/admin/snapshot", ""}
	memberCall := call{"POST", "/v1/internal/members", `{"id": "n1", "http": "127.0.0.1:1"}`}
	open := []call{kvCall, readCall, statusCall, metricsCall, pageCall}
	privileged := []call{adminCall, memberCall}
	bearer := func(tok string) string { return "Bearer " + tok }

	for _, tc := range []struct {
		name     string
		api      string
		admin    string
		allowed  map[string][]call // by Authorization header
		rejected map[string][]call // 403
	}{
		{
			name:    "no tokens: everything is open",
			allowed: map[string][]call{"": append(open, privileged...), bearer("anything"): append(open, privileged...)},
		},
		{
			name:     "admin token only: the admin calls need it",
			admin:    adminToken,
			allowed:  map[string][]call{"": open, bearer(adminToken): append(open, privileged...)},
			rejected: map[string][]call{bearer("wrong"): privileged, bearer(apiToken): privileged},
		},
		{
			name:     "API token only: it protects everything",
			api:      apiToken,
			allowed:  map[string][]call{bearer(apiToken): append(open, privileged...)},
			rejected: map[string][]call{bearer("wrong"): append(open, privileged...)},
		},
		{
			name:  "both: the admin token opens everything, the API token not the admin calls",
			api:   apiToken,
			admin: adminToken,
			allowed: map[string][]call{
				bearer(apiToken):   open,
				bearer(adminToken): append(open, privileged...),
				// The scheme is case-insensitive.
				"bearer " + apiToken: open,
			},
			rejected: map[string][]call{
				bearer(apiToken):                    privileged,
				bearer("wrong"):                     append(open, privileged...),
				bearer(apiToken + "x"):              open,
				bearer(apiToken[:len(apiToken)-1]):  open,
				bearer(strings.ToUpper(adminToken)): privileged,
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, 1, 0, func(cfg *Config) { cfg.APIToken, cfg.AdminToken = tc.api, tc.admin })
			client := noRedirects(t)
			for auth, calls := range tc.allowed {
				for _, cl := range calls {
					code, _, body := doAuth(t, client, cl.method, c.url(0, cl.path), cl.body, auth)
					if code == http.StatusUnauthorized || code == http.StatusForbidden || code >= 500 {
						t.Errorf("%s %s with %q: %d %s, want it served", cl.method, cl.path, auth, code, body)
					}
				}
			}
			for auth, calls := range tc.rejected {
				for _, cl := range calls {
					code, h, body := doAuth(t, client, cl.method, c.url(0, cl.path), cl.body, auth)
					wantError(t, cl.method+" "+cl.path+" with "+auth, code, h, body, http.StatusForbidden, "token")
				}
			}
			if tc.api == "" && tc.admin == "" {
				return
			}
			// Without a bearer token: 401, with a challenge.
			needs := privileged
			if tc.api != "" {
				needs = append(open, privileged...)
			}
			for _, auth := range []string{"", "Basic " + apiToken, "Bearer", "Bearer ", apiToken} {
				for _, cl := range needs {
					code, h, body := doAuth(t, client, cl.method, c.url(0, cl.path), cl.body, auth)
					wantError(t, cl.method+" "+cl.path+" with "+auth, code, h, body, http.StatusUnauthorized, "Authorization: Bearer")
					if got := h.Get("WWW-Authenticate"); got != `Bearer realm="graftkv"` {
						t.Errorf("%s %s: WWW-Authenticate %q", cl.method, cl.path, got)
					}
				}
			}
			// A refused write writes nothing.
			if tc.api != "" {
				doAuth(t, client, "PUT", c.url(0, "/v1/kv/refused"), "x", "Bearer wrong")
				doAuth(t, client, "PUT", c.url(0, "/v1/kv/refused"), "x", "")
				if _, ok := c.contents(0)["refused"]; ok {
					t.Error("a refused write was applied")
				}
			}
		})
	}
}

// TestTokensCluster checks that nodes given tokens still work together:
// followers record their HTTP addresses with the leader (an internal
// call), redirect with the token kept, and the status page sees peers.
func TestTokensCluster(t *testing.T) {
	c := newCluster(t, 3, 0, func(cfg *Config) { cfg.APIToken, cfg.AdminToken = apiToken, adminToken })
	f := c.follower()
	follow := &http.Client{Timeout: 10 * time.Second}
	defer follow.CloseIdleConnections()
	// Go's client keeps Authorization on a redirect to the same host.
	code, _, body := doAuth(t, follow, "PUT", c.url(f, "/v1/kv/k"), "v", "Bearer "+apiToken)
	wantIndex(t, "put through a follower", code, body)
	pollPage(t, func() string {
		code, _, body = doAuth(t, follow, "GET", c.url(f, "/"), "", "Bearer "+apiToken)
		return body
	})
	if code != 200 || strings.Contains(body, "cannot see it") {
		t.Fatalf("page: %d\n%s", code, body)
	}
	code, h, body := doAuth(t, noRedirects(t), "POST", c.url(c.leader(), "/v1/internal/members"), `{"id": "n2", "http": "evil:80"}`, "Bearer "+apiToken)
	wantError(t, "member record with the API token", code, h, body, http.StatusForbidden, "token")
	if a, _ := c.nodes[c.leader()].srv.FSM().Member("n2"); a == "evil:80" {
		t.Fatal("the member record was overwritten")
	}
}

func TestTokenValidation(t *testing.T) {
	net := memory.NewNetwork(1)
	defer net.Close()
	tr := net.Transport("x")
	defer tr.Close()
	for _, tc := range []struct{ api, admin, mention string }{
		{"same", "same", "the same"},
		{"with space", "", "APIToken"},
		{"", "tab\there", "AdminToken"},
		{"", "é", "AdminToken"},
	} {
		c := DefaultConfig()
		c.ID, c.HTTPAddr, c.DataDir = "n1", "127.0.0.1:1", t.TempDir()
		c.Transport, c.Router = tr, transport.NewRouter()
		c.APIToken, c.AdminToken = tc.api, tc.admin
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.mention) {
			t.Errorf("Validate(api %q, admin %q) = %v, want a mention of %q", tc.api, tc.admin, err, tc.mention)
		}
	}
}

// newTestTLS returns an HTTPS setup: every node presents a certificate
// from a fresh CA and verifies client certificates if given.
func newTestTLS(t *testing.T) (*testTLS, *certgen.CA) {
	t.Helper()
	ca, err := certgen.NewCA("kv test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := ca.Issue("node", []string{"127.0.0.1"}, certgen.Node, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pair.TLS()
	if err != nil {
		t.Fatal(err)
	}
	return &testTLS{
		server: &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: ca.Pool()},
		client: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: ca.Pool()},
	}, ca
}

// TestHTTPS runs a cluster whose HTTP APIs are HTTPS, with tokens: nodes
// record their addresses by certificate, redirects name https:// URLs,
// clients need no certificate, and the internal call takes a node's
// certificate in place of the token.
func TestHTTPS(t *testing.T) {
	tlsc, ca := newTestTLS(t)
	c := newTLSCluster(t, 3, 0, func(cfg *Config) { cfg.APIToken, cfg.AdminToken = apiToken, adminToken }, tlsc)
	l, f := c.leader(), c.follower()
	if !strings.HasPrefix(c.url(f, ""), "https://") {
		t.Fatalf("not HTTPS: %s", c.url(f, ""))
	}
	// A client that trusts the CA and has no certificate.
	client := &http.Client{Timeout: 10 * time.Second,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	defer client.CloseIdleConnections()
	code, h, _ := doAuth(t, client, "PUT", c.url(f, "/v1/kv/k"), "v", "Bearer "+apiToken)
	if loc := h.Get("Location"); code != http.StatusTemporaryRedirect || loc != c.url(l, "/v1/kv/k") || !strings.HasPrefix(loc, "https://") {
		t.Fatalf("redirect: %d to %q, want 307 to %s", code, loc, c.url(l, "/v1/kv/k"))
	}
	code, _, body := doAuth(t, client, "PUT", c.url(l, "/v1/kv/k"), "v", "Bearer "+apiToken)
	wantIndex(t, "put over HTTPS", code, body)
	pollPage(t, func() string {
		code, _, body = doAuth(t, client, "GET", c.url(f, "/"), "", "Bearer "+apiToken)
		return body
	})
	if code != 200 || strings.Contains(body, "cannot see it") || !strings.Contains(body, `href="`+c.url(l, "/")+`"`) {
		t.Fatalf("page over HTTPS: %d\n%s", code, body)
	}
	// The internal call: a node's certificate is enough; without it a
	// token is needed.
	member := `{"id": "` + c.nodes[f].id + `", "http": "` + strings.TrimPrefix(c.url(f, ""), "https://") + `"}`
	code, h, body = doAuth(t, client, "POST", c.url(l, "/v1/internal/members"), member, "")
	wantError(t, "member record without a certificate or token", code, h, body, http.StatusUnauthorized, "Bearer")
	node := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsc.client}}
	defer node.CloseIdleConnections()
	code, _, body = doAuth(t, node, "POST", c.url(l, "/v1/internal/members"), member, "")
	wantIndex(t, "member record with a node certificate", code, body)
	// The certificate opens only the internal call.
	code, h, body = doAuth(t, node, "POST", c.url(l, "/v1/admin/snapshot"), "", "")
	wantError(t, "admin call with a node certificate", code, h, body, http.StatusUnauthorized, "Bearer")

	// A client certificate from another CA fails the handshake.
	other, _ := newTestTLS(t)
	stranger := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		Certificates: other.client.Certificates, RootCAs: ca.Pool()}}}
	defer stranger.CloseIdleConnections()
	if resp, err := stranger.Post(c.url(l, "/v1/internal/members"), "application/json", strings.NewReader(member)); err == nil {
		resp.Body.Close()
		t.Fatalf("a certificate from another CA got %s", resp.Status)
	}
}
