package certgen

import (
	"crypto/x509"
	"errors"
	"net"
	"os"
	"slices"
	"testing"
	"time"
)

func TestIssue(t *testing.T) {
	ca, err := NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// A CA loaded from its PEM files issues certificates the original
	// verifies.
	loaded, err := LoadCA(ca.CertPEM, ca.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	node, err := loaded.Issue("n1", []string{"10.0.0.1", "::1", "node1.example"}, Node, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := node.TLS()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(tc.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "node1.example", KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Errorf("node certificate for usage %v: %v", usage, err)
		}
	}
	if err := cert.VerifyHostname("10.0.0.1"); err != nil {
		t.Error(err)
	}
	if !slices.ContainsFunc(cert.IPAddresses, func(ip net.IP) bool { return ip.Equal(net.IPv6loopback) }) || cert.Subject.CommonName != "n1" {
		t.Errorf("SANs %v, CN %q", cert.IPAddresses, cert.Subject.CommonName)
	}
	if cert.NotAfter.After(ca.cert.NotAfter) {
		t.Errorf("the certificate outlives its CA: %v > %v", cert.NotAfter, ca.cert.NotAfter)
	}
	// A client certificate cannot serve.
	client, err := ca.Issue("ctl", nil, Client, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cc, _ := client.TLS()
	ccert, _ := x509.ParseCertificate(cc.Certificate[0])
	if _, err := ccert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Error("a client certificate verifies for serving")
	}
	// Another CA's certificates do not verify.
	other, _ := NewCA("other", time.Hour)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: other.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil {
		t.Error("verified against another CA")
	}
	// A non-CA certificate is not a CA.
	if _, err := LoadCA(node.CertPEM, node.KeyPEM); !errors.Is(err, ErrInvalid) {
		t.Errorf("LoadCA of a node certificate: %v", err)
	}
	if _, err := LoadCA(ca.CertPEM, node.KeyPEM); !errors.Is(err, ErrInvalid) {
		t.Errorf("LoadCA with the wrong key: %v", err)
	}
}

func TestWriteFiles(t *testing.T) {
	ca, err := NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert, key, err := ca.WriteFiles(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v", fi.Mode(), err)
	}
	if b, err := os.ReadFile(cert); err != nil || string(b) != string(ca.CertPEM) {
		t.Fatalf("certificate file: %v", err)
	}
	if _, _, err := ca.WriteFiles(dir, "ca"); !errors.Is(err, os.ErrExist) {
		t.Fatalf("second WriteFiles = %v, want it to refuse to overwrite", err)
	}
}
