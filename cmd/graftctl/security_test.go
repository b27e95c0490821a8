package main

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/graft-raft/graft/internal/certgen"
)

// newTLSFake is a fakeNode serving HTTPS with a certificate from a fresh
// CA, whose certificate file it returns.
func newTLSFake(t *testing.T) (*fakeNode, string) {
	t.Helper()
	dir := t.TempDir()
	ca, err := certgen.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caFile, _, err := ca.WriteFiles(dir, "ca")
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
	f := newFake(t)
	f.srv.Close()
	f.srv = httptest.NewUnstartedServer(f.srv.Config.Handler)
	f.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	return f, caFile
}

func (f *fakeNode) tlsAddr() string { return strings.TrimPrefix(f.srv.URL, "https://") }

func TestTokenIsSent(t *testing.T) {
	leader, follower := newFake(t), newFake(t)
	follower.redirectTo(leader, http.StatusTemporaryRedirect)
	var got []string
	leader.mux.HandleFunc("POST /v1/admin/snapshot", func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Header.Get("Authorization"))
		writeJSON(w, 200, map[string]any{"index": 5})
	})
	code, _, _ := graftctl(t, "--addr", follower.addr(), "--token", "s3cret", "snapshot")
	wantExit(t, code, 0)
	t.Setenv("GRAFTCTL_TOKEN", "from-env")
	code, _, _ = graftctl(t, "--addr", follower.addr(), "snapshot")
	wantExit(t, code, 0)
	if len(got) != 2 || got[0] != "Bearer s3cret" || got[1] != "Bearer from-env" {
		t.Fatalf("the leader saw Authorization %q, want the token after the redirect", got)
	}
	// --help does not print the token from the environment.
	_, out, _ := graftctl(t, "--help")
	if strings.Contains(out, "from-env") {
		t.Fatal("--help prints $GRAFTCTL_TOKEN")
	}
	// A 401 or 403 is an error with the server's message.
	leader.mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 403, map[string]string{"error": "the token does not grant API access"})
	})
	code, _, stderr := graftctl(t, "--addr", leader.addr(), "status")
	wantExit(t, code, 1)
	if !strings.Contains(stderr, "403") || !strings.Contains(stderr, "does not grant") {
		t.Fatalf("stderr %q", stderr)
	}
}

func TestHTTPS(t *testing.T) {
	f, caFile := newTLSFake(t)
	f.mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, sampleStatus) })
	// With --cacert, HOST:PORT means https.
	code, _, _ := graftctl(t, "--addr", f.tlsAddr(), "--cacert", caFile, "status")
	wantExit(t, code, 0)
	code, _, _ = graftctl(t, "--addr", "https://"+f.tlsAddr(), "--insecure-skip-verify", "status")
	wantExit(t, code, 0)
	// Without the CA the certificate is not trusted.
	code, _, stderr := graftctl(t, "--addr", "https://"+f.tlsAddr(), "status")
	wantExit(t, code, 1)
	if !strings.Contains(stderr, "certificate") {
		t.Fatalf("stderr %q does not explain the certificate error", stderr)
	}
	// Bad files are usage mistakes reported as such.
	for _, args := range [][]string{
		{"--cacert", filepath.Join(t.TempDir(), "nope")},
		{"--cacert", caFile, "--cert", caFile},
	} {
		code, _, _ := graftctl(t, append(append([]string{"--addr", f.tlsAddr()}, args...), "status")...)
		wantExit(t, code, 1)
	}
	// A redirect from HTTPS to plain HTTP does not get the token.
	plain := newFake(t)
	f.mux.HandleFunc("POST /v1/admin/snapshot", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", "http://"+plain.addr()+r.URL.Path)
		writeJSON(w, http.StatusTemporaryRedirect, map[string]string{"error": "not the leader"})
	})
	code, _, stderr = graftctl(t, "--addr", f.tlsAddr(), "--cacert", caFile, "--token", "s3cret", "snapshot")
	wantExit(t, code, 1)
	if len(plain.requests()) != 0 || !strings.Contains(stderr, "not sending the token") {
		t.Fatalf("downgrade: %d requests reached the plain node; stderr %q", len(plain.requests()), stderr)
	}
}
