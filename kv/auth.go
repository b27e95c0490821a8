package kv

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"strings"
)

// access is what an endpoint requires of a request.
type access int

const (
	// accessAPI: the keys, status, metrics and page. Config.APIToken, if
	// set, or Config.AdminToken.
	accessAPI access = iota
	// accessAdmin: /v1/admin/*. Config.AdminToken, or Config.APIToken if
	// only that is set.
	accessAdmin
	// accessInternal: /v1/internal/*, which nodes call. As accessAdmin,
	// or a client certificate the HTTPS server verified.
	accessInternal
)

func (a access) String() string {
	switch a {
	case accessAdmin:
		return "admin"
	case accessInternal:
		return "internal"
	}
	return "API"
}

// accessOf classifies a request path.
func accessOf(path string) access {
	switch {
	case strings.HasPrefix(path, "/v1/admin/"):
		return accessAdmin
	case strings.HasPrefix(path, "/v1/internal/"):
		return accessInternal
	}
	return accessAPI
}

// tokenHash is the SHA-256 of a token. Tokens are compared by hash, in
// constant time, so that neither their bytes nor their length leak
// through timing.
type tokenHash [sha256.Size]byte

// guard holds the tokens each access level accepts.
type guard struct {
	api, admin []tokenHash // empty: open
}

func newGuard(apiToken, adminToken string) guard {
	var g guard
	if apiToken != "" {
		g.api = append(g.api, sha256.Sum256([]byte(apiToken)))
	}
	if adminToken != "" {
		g.admin = append(g.admin, sha256.Sum256([]byte(adminToken)))
	}
	switch {
	case len(g.api) > 0 && len(g.admin) > 0:
		g.api = append(g.api, g.admin...) // the admin token opens everything
	case len(g.api) > 0:
		g.admin = g.api // an API token alone protects the admin calls too
	}
	return g
}

// check answers 401 or 403 and returns false if r may not use an endpoint
// of level a.
func (g guard) check(w http.ResponseWriter, r *http.Request, a access) bool {
	want := g.api
	if a != accessAPI {
		want = g.admin
	}
	if len(want) == 0 {
		return true
	}
	if a == accessInternal && r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		return true // a node's certificate, verified against the cluster's CA
	}
	token, ok := bearer(r)
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="graftkv"`)
		writeError(w, http.StatusUnauthorized, "%s needs the %s token: send Authorization: Bearer <token>", r.URL.Path, a)
		return false
	}
	got := tokenHash(sha256.Sum256([]byte(token)))
	match := 0
	for _, h := range want {
		match |= subtle.ConstantTimeCompare(got[:], h[:])
	}
	if match != 1 {
		writeError(w, http.StatusForbidden, "the token does not grant %s access to %s", a, r.URL.Path)
		return false
	}
	return true
}

// bearer returns the token of an "Authorization: Bearer <token>" header.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Values("Authorization")
	if len(h) != 1 {
		return "", false
	}
	scheme, token, ok := strings.Cut(h[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// outgoingToken is the token this node sends with its own requests to
// other nodes' endpoints of level a ("" if they are open).
func (c *Config) outgoingToken(a access) string {
	if a == accessAPI && c.APIToken != "" {
		return c.APIToken
	}
	if c.AdminToken != "" {
		return c.AdminToken
	}
	return c.APIToken
}

// checkToken reports what is wrong with a token from the configuration.
func checkToken(name, token string) error {
	if token == "" {
		return nil
	}
	for i := 0; i < len(token); i++ {
		if c := token[i]; c <= ' ' || c >= 0x7f {
			return fmt.Errorf("%s has a byte %#x that cannot go in an HTTP header (use printable ASCII without spaces)", name, c)
		}
	}
	return nil
}
