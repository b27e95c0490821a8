// Package certgen makes the certificates of a graft cluster's mutual TLS:
// a certificate authority, and certificates it signs for nodes (usable as
// TLS server and client) and for clients. It backs `graftkv gen-certs` and
// the TLS tests. Keys are ECDSA P-256; serial numbers are 128 random bits.
//
//	ca, _ := certgen.NewCA("graft test CA", 365*24*time.Hour)
//	n1, _ := ca.Issue("n1", []string{"10.0.0.1", "node1.example"}, certgen.Node, 365*24*time.Hour)
//	os.WriteFile("n1.crt", n1.CertPEM, 0o644)
//	os.WriteFile("n1.key", n1.KeyPEM, 0o600)
package certgen

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// ErrInvalid reports a certificate or key that cannot be used.
var ErrInvalid = errors.New("certgen: invalid certificate or key")

// Usage is what a certificate may be used for.
type Usage int

const (
	// Node certificates authenticate a node both as a TLS server (its raft
	// and HTTP listeners) and as a client (when it dials its peers).
	Node Usage = iota
	// Client certificates only authenticate clients (graftctl, curl).
	Client
)

// Pair is a PEM-encoded certificate and its private key.
type Pair struct {
	CertPEM, KeyPEM []byte
}

// TLS returns the pair as a tls.Certificate.
func (p Pair) TLS() (tls.Certificate, error) {
	c, err := tls.X509KeyPair(p.CertPEM, p.KeyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return c, nil
}

// CA is a certificate authority. It is safe for concurrent use.
type CA struct {
	Pair
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// NewCA makes a self-signed CA named name, valid from now for validFor.
func NewCA(name string, validFor time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl, err := template(name, validFor)
	if err != nil {
		return nil, err
	}
	tmpl.IsCA = true
	tmpl.BasicConstraintsValid = true
	tmpl.MaxPathLenZero = true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return &CA{Pair: Pair{CertPEM: encodeCert(der), KeyPEM: keyPEM}, cert: cert, key: key}, nil
}

// LoadCA returns the CA of a PEM certificate and ECDSA key made by NewCA
// (or openssl), to issue more certificates with it.
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok || !cert.IsCA {
		return nil, fmt.Errorf("%w: not an ECDSA CA certificate", ErrInvalid)
	}
	return &CA{Pair: Pair{CertPEM: certPEM, KeyPEM: keyPEM}, cert: cert, key: key}, nil
}

// Issue makes a certificate for name (its common name) signed by ca,
// valid from now for validFor (capped at the CA's own expiry). hosts are
// its subject alternative names: IP addresses and DNS names, which clients
// check against the address they dial. A Client certificate needs none.
func (ca *CA) Issue(name string, hosts []string, usage Usage, validFor time.Duration) (Pair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Pair{}, err
	}
	tmpl, err := template(name, validFor)
	if err != nil {
		return Pair{}, err
	}
	if tmpl.NotAfter.After(ca.cert.NotAfter) {
		tmpl.NotAfter = ca.cert.NotAfter
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	switch usage {
	case Node:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	case Client:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	default:
		return Pair{}, fmt.Errorf("certgen: unknown usage %d", usage)
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return Pair{}, err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return Pair{}, err
	}
	return Pair{CertPEM: encodeCert(der), KeyPEM: keyPEM}, nil
}

// Pool returns a certificate pool holding only ca.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

func template(name string, validFor time.Duration) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, err
	}
	if validFor <= 0 {
		return nil, fmt.Errorf("certgen: validity %v is not positive", validFor)
	}
	now := time.Now()
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name, Organization: []string{"graft"}},
		NotBefore:    now.Add(-5 * time.Minute), // tolerate clocks a little behind
		NotAfter:     now.Add(validFor),
	}, nil
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// WriteFiles writes p to dir/name.crt (mode 0644) and dir/name.key (0600)
// and returns their paths. It refuses to overwrite an existing file.
func (p Pair) WriteFiles(dir, name string) (certFile, keyFile string, err error) {
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := writeNew(keyFile, p.KeyPEM, 0o600); err != nil {
		return "", "", err
	}
	if err := writeNew(certFile, p.CertPEM, 0o644); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

func writeNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
