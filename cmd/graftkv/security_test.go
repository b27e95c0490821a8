package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

func TestGenCerts(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	var out bytes.Buffer
	if err := genCerts(&out, dir, []string{"127.0.0.1", "localhost"}, []string{"n1", "n2"}, nil, []string{"client"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	// A second run reuses the CA to add a node with its own hosts.
	if err := genCerts(&out, dir, nil, nil, []string{"n3=10.0.0.3,node3.example"}, nil, time.Hour); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "using the CA") {
		t.Errorf("second run did not reuse the CA:\n%s", out.String())
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	for name, host := range map[string]string{"n1": "127.0.0.1", "n2": "localhost", "n3": "node3.example", "client": ""} {
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		cert, _ := x509.ParseCertificate(pair.Certificate[0])
		usage := x509.ExtKeyUsageServerAuth
		if host == "" {
			usage = x509.ExtKeyUsageClientAuth
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: host, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Errorf("%s does not verify for %q: %v", name, host, err)
		}
		if fi, err := os.Stat(filepath.Join(dir, name+".key")); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s.key: mode %v, %v", name, fi.Mode(), err)
		}
	}
	// Nothing is overwritten.
	if err := genCerts(&out, dir, []string{"127.0.0.1"}, []string{"n1"}, nil, nil, time.Hour); err == nil {
		t.Error("gen-certs overwrote n1")
	}
	for _, bad := range [][]string{{"../x"}, {"ca"}, {"a", "a"}} {
		if err := genCerts(&out, dir, []string{"h"}, bad, nil, nil, time.Hour); err == nil {
			t.Errorf("gen-certs accepted the names %q", bad)
		}
	}
}

func TestSecurityFlags(t *testing.T) {
	for _, s := range []security{
		{certFile: "c"},
		{certFile: "c", keyFile: "k"},
		{caFile: "ca"},
		{plainHTTP: true},
	} {
		if err := s.check(); err == nil {
			t.Errorf("%+v accepted", s)
		}
	}
	if err := (security{certFile: "c", keyFile: "k", caFile: "ca", plainHTTP: true}).check(); err != nil {
		t.Error(err)
	}
	// A process with TLS files that do not exist does not start.
	if _, err := newProcess(nil, 0, nil, security{certFile: "/nope.crt", keyFile: "/nope.key", caFile: "/nope.ca"}); err == nil {
		t.Error("newProcess accepted missing TLS files")
	}

	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	if err := os.WriteFile(file, []byte("  s3cret-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := &cobra.Command{}
	var tok string
	cmd.Flags().StringVar(&tok, "api-token", "", "")
	if got, err := tokenFlag(cmd, "api-token", "", file); err != nil || got != "s3cret-token" {
		t.Errorf("token from a file: %q, %v", got, err)
	}
	if got, err := tokenFlag(cmd, "api-token", "inline", ""); err != nil || got != "inline" {
		t.Errorf("inline token: %q, %v", got, err)
	}
	for _, f := range []string{empty, filepath.Join(dir, "missing")} {
		if _, err := tokenFlag(cmd, "api-token", "", f); err == nil {
			t.Errorf("token file %s accepted", f)
		}
	}
	if err := cmd.Flags().Set("api-token", "inline"); err != nil {
		t.Fatal(err)
	}
	if _, err := tokenFlag(cmd, "api-token", "inline", file); err == nil {
		t.Error("both --api-token and --api-token-file accepted")
	}
}
