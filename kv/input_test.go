package kv

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// endless is a request body that never ends; it counts the bytes read.
type endless struct{ n int64 }

func (e *endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	e.n += int64(len(p))
	return len(p), nil
}

func (e *endless) Close() error { return nil }

// TestOversizedBodies checks that a body over its endpoint's limit is
// refused with 413 after reading at most the limit and a byte, whether
// its Content-Length says so up front or it is streamed without one.
func TestOversizedBodies(t *testing.T) {
	const maxValue = 1000
	c := newCluster(t, 1, 0, func(cfg *Config) { cfg.MaxValueSize = maxValue })
	h := c.nodes[0].srv.Handler()
	for _, tc := range []struct {
		method, path string
		limit        int64
	}{
		{"PUT", "/v1/kv/k", maxValue},
		{"POST", "/v1/admin/peers", maxPeersBody},
		{"POST", "/v1/internal/members", maxMemberBody},
	} {
		// Streamed: read up to the limit, then cut off.
		body := &endless{}
		req := httptest.NewRequest(tc.method, tc.path, nil)
		req.Body, req.ContentLength = body, -1
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		wantError(t, tc.path+" streamed", rec.Code, rec.Header(), rec.Body.String(), http.StatusRequestEntityTooLarge, "over the limit")
		if body.n > tc.limit+1 {
			t.Errorf("%s: read %d bytes of an endless body, over the limit %d", tc.path, body.n, tc.limit)
		}
		// Announced: refused without reading.
		body = &endless{}
		req = httptest.NewRequest(tc.method, tc.path, nil)
		req.Body, req.ContentLength = body, 1<<40
		rec = httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		wantError(t, tc.path+" announced", rec.Code, rec.Header(), rec.Body.String(), http.StatusRequestEntityTooLarge, "over the limit")
		if body.n != 0 {
			t.Errorf("%s: read %d bytes of a body announced as 1 TiB", tc.path, body.n)
		}
	}
	if got := c.contents(0); len(got) != 0 {
		t.Fatalf("refused bodies wrote %v", got)
	}

	// Over a real connection the server answers and then closes it
	// rather than read the rest.
	pr, pw := io.Pipe()
	defer pw.Close()
	req, _ := http.NewRequest("PUT", c.url(0, "/v1/kv/k"), pr)
	go func() {
		chunk := make([]byte, 4096)
		for {
			if _, err := pw.Write(chunk); err != nil {
				return
			}
		}
	}()
	resp, err := noRedirects(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !resp.Close {
		t.Fatalf("streamed over the limit: %s, close %v; want 413 and the connection closed", resp.Status, resp.Close)
	}
}

// TestMalformedInput checks that malformed keys, query strings and bodies
// get 400 and change nothing.
func TestMalformedInput(t *testing.T) {
	c := newCluster(t, 1, 0, nil)
	client := noRedirects(t)
	code, _, body := do(t, client, "PUT", c.url(0, "/v1/kv/k"), "v")
	wantIndex(t, "put", code, body)
	for _, tc := range []struct {
		method, path, body string
		mention            string
	}{
		// A mangled condition must not become an unconditional write.
		{"PUT", "/v1/kv/k?prev=%zz", "w", "malformed query"},
		{"PUT", "/v1/kv/k?prev=v&prev=x", "w", "2 times"},
		{"PUT", "/v1/kv/k?prev-exist=false&prev-exist=false", "w", "2 times"},
		{"PUT", "/v1/kv/k?prevexist=false", "w", "unknown query parameter"},
		{"PUT", "/v1/kv/k?prev=v;x", "w", "malformed query"},
		{"GET", "/v1/kv/k?consistency=stale&consistency=linearizable", "", "2 times"},
		{"GET", "/v1/kv/k?consistncy=stale", "", "unknown query parameter"},
		{"DELETE", "/v1/kv/k?prev=v", "", "takes none"},
		{"DELETE", "/v1/kv/k?%", "", "malformed query"},
		{"POST", "/v1/admin/snapshot?index=5", "", "takes none"},
		{"POST", "/v1/admin/transfer-leader?to=%zz", "", "malformed query"},
		{"POST", "/v1/admin/transfer-leader?to=n1&to=n2", "", "2 times"},
		{"POST", "/v1/admin/peers?force=1", `{"remove": "n9"}`, "takes none"},
		{"POST", "/v1/admin/peers", `{"remove": "n9"} {"remove": "n1"}`, "after the JSON value"},
		{"POST", "/v1/admin/peers", `{"remove": "n1"}]`, "bad body"},
		{"POST", "/v1/admin/peers", `[`, "bad body"},
		{"POST", "/v1/internal/members", `{"id": "n1", "http": "h:1"} x`, "bad body"},
		{"POST", "/v1/internal/members", `{"id": 5}`, "bad body"},
		{"PUT", "/v1/kv/", "w", "empty key"},
		{"GET", "/v1/kv/" + strings.Repeat("k", DefaultMaxKeySize+1), "", "over the limit"},
	} {
		code, h, body := do(t, client, tc.method, c.url(0, tc.path), tc.body)
		wantError(t, tc.method+" "+tc.path+" "+tc.body, code, h, body, http.StatusBadRequest, tc.mention)
	}
	if got := c.contents(0); len(got) != 1 || got["k"] != "v" {
		t.Fatalf("malformed requests changed the store: %v", got)
	}
	st := c.nodes[0].srv.Status()
	if len(st.Peers) != 1 || st.Role != "leader" {
		t.Fatalf("malformed requests changed the node: %+v", st)
	}

	// A path that is not valid percent-encoding never reaches the
	// handler: Go's server answers 400 itself. Go's client refuses to
	// send one, so write it by hand.
	conn, err := net.Dial("tcp", c.nodes[0].http.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("PUT /v1/kv/%zz HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nw")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad escape in the key: %s", resp.Status)
	}
}
