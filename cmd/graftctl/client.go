package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
)

// maxRedirects bounds the 307/308 hops of one request: a follower points at
// the leader, which answers; more than a few hops means the cluster is
// electing or misconfigured.
const maxRedirects = 10

// maxBody bounds how much of an answer is read (values are at most 1 MiB by
// default; the limit is a flag of the server, so leave room).
const maxBody = 64 << 20

// client talks to one graftkv node's HTTP API. It follows 307 and 308
// redirects itself, re-sending the method and body to the Location, so that
// writes sent to a follower reach the leader. It is safe for concurrent use.
type client struct {
	base *url.URL
	hc   *http.Client
	// token, if set, is sent as "Authorization: Bearer <token>".
	token string
	// trace, if set, receives one line per redirect followed.
	trace io.Writer
}

// clientOptions are the connection flags.
type clientOptions struct {
	token string
	// caFile, certFile and keyFile are PEM files: the CA that signed the
	// nodes' certificates, and a client certificate and key to present.
	caFile, certFile, keyFile string
	// insecure skips the verification of the nodes' certificates.
	insecure bool
}

func (o clientOptions) tls() bool {
	return o.caFile != "" || o.certFile != "" || o.keyFile != "" || o.insecure
}

// tlsConfig returns the TLS configuration of the options, nil for the
// defaults (the system's CAs, no client certificate).
func (o clientOptions) tlsConfig() (*tls.Config, error) {
	if !o.tls() {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: o.insecure}
	if o.caFile != "" {
		pem, err := os.ReadFile(o.caFile)
		if err != nil {
			return nil, fmt.Errorf("--cacert: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--cacert: %s holds no PEM certificate", o.caFile)
		}
	}
	if (o.certFile == "") != (o.keyFile == "") {
		return nil, errors.New("--cert and --key go together")
	}
	if o.certFile != "" {
		cert, err := tls.LoadX509KeyPair(o.certFile, o.keyFile)
		if err != nil {
			return nil, fmt.Errorf("--cert/--key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// newClient returns a client for addr, which is HOST:PORT or an http(s)
// URL; HOST:PORT means https when TLS options are given.
func newClient(addr string, trace io.Writer, o clientOptions) (*client, error) {
	if addr == "" {
		return nil, errors.New("no node address: use --addr HOST:PORT (or set GRAFTCTL_ADDR)")
	}
	raw := addr
	if !strings.Contains(raw, "://") {
		if o.tls() {
			raw = "https://" + raw
		} else {
			raw = "http://" + raw
		}
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("bad --addr %q: want HOST:PORT, http://HOST:PORT or https://HOST:PORT", addr)
	}
	u.Path, u.RawPath, u.RawQuery, u.Fragment = strings.TrimRight(u.Path, "/"), "", "", ""
	tlsCfg, err := o.tlsConfig()
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsCfg
	return &client{
		base: u,
		hc: &http.Client{
			Transport: tr,
			// Redirects are followed by do, which re-sends bodies.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		token: o.token,
		trace: trace,
	}, nil
}

// url returns the URL of escapedPath (already escaped) with query q.
func (c *client) url(escapedPath string, q url.Values) *url.URL {
	u, err := c.base.Parse(c.base.EscapedPath() + escapedPath)
	if err != nil {
		panic(fmt.Sprintf("graftctl: bad request path %q: %v", escapedPath, err)) // paths are built with url.PathEscape
	}
	u.RawQuery = q.Encode()
	return u
}

// kvPath is the escaped path of key.
func kvPath(key string) string { return "/v1/kv/" + url.PathEscape(key) }

// response is a complete answer.
type response struct {
	Code   int
	Status string
	Header http.Header
	Body   []byte
	URL    *url.URL // the URL that answered, after redirects
	Method string
}

// apiError is a non-2xx answer.
type apiError struct {
	Method string
	URL    string
	Code   int
	Status string
	Msg    string // the server's "error" field, or the start of its body
}

func (e *apiError) Error() string {
	var b strings.Builder
	b.WriteString(e.Status)
	if e.Msg != "" {
		b.WriteString(": ")
		b.WriteString(e.Msg)
	}
	if e.Code == http.StatusServiceUnavailable && !strings.Contains(e.URL, "/v1/status") {
		b.WriteString(" (the cluster may be electing a leader; try again)")
	}
	fmt.Fprintf(&b, " [%s %s]", e.Method, e.URL)
	return b.String()
}

// errorMessage extracts the message of an error answer: the JSON "error"
// field, or else the body's first line.
func errorMessage(body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return e.Error
	}
	s := strings.TrimSpace(string(body))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

// do sends method to u with body (nil for none) and returns the answer,
// following redirects. Only a transport failure is an error; any status is
// returned in the response (see check).
func (c *client) do(ctx context.Context, method string, u *url.URL, body []byte) (*response, error) {
	for hop := 0; ; hop++ {
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
		if err != nil {
			return nil, err
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/octet-stream")
		}
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		resp, err := c.hc.Do(req)
		if err != nil {
			return nil, fmt.Errorf("cannot reach %s: %w", u.Host, unwrapURLError(err))
		}
		data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("%s %s: reading the answer: %w", method, u, err)
		}
		if resp.StatusCode == http.StatusTemporaryRedirect || resp.StatusCode == http.StatusPermanentRedirect {
			loc := resp.Header.Get("Location")
			if loc == "" {
				return nil, fmt.Errorf("%s %s: %s without a Location header", method, u, resp.Status)
			}
			next, err := u.Parse(loc)
			if err != nil {
				return nil, fmt.Errorf("%s %s: %s to a bad Location %q: %v", method, u, resp.Status, loc, err)
			}
			if c.token != "" && u.Scheme == "https" && next.Scheme != "https" {
				return nil, fmt.Errorf("%s %s: %s to %s: not sending the token over plain HTTP", method, u, resp.Status, next)
			}
			if hop >= maxRedirects {
				return nil, fmt.Errorf("%s %s: more than %d redirects (last to %s); is the cluster electing?", method, u, maxRedirects, next)
			}
			if c.trace != nil {
				fmt.Fprintf(c.trace, "graftctl: %s redirected to %s\n", u.Host, next)
			}
			u = next
			continue
		}
		return &response{Code: resp.StatusCode, Status: resp.Status, Header: resp.Header, Body: data, URL: u, Method: method}, nil
	}
}

// unwrapURLError drops the *url.Error wrapper, whose message repeats the
// method and URL.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// check returns an *apiError for a non-2xx answer.
func check(r *response) error {
	if r.Code >= 200 && r.Code < 300 {
		return nil
	}
	return &apiError{Method: r.Method, URL: r.URL.String(), Code: r.Code, Status: r.Status, Msg: errorMessage(r.Body)}
}

// call is do followed by check.
func (c *client) call(ctx context.Context, method string, u *url.URL, body []byte) (*response, error) {
	r, err := c.do(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	return r, check(r)
}
