package grpctransport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// ErrTLSConfig reports TLS files that cannot be used: a missing or
// unreadable file, a certificate that does not match its key, or a CA
// file with no certificate in it.
var ErrTLSConfig = errors.New("grpctransport: bad TLS configuration")

// ServerTLSConfig returns the TLS configuration for a process's Server
// under mutual TLS: it presents the certificate in certFile (with its
// key in keyFile, both PEM) and requires every client to present a
// certificate signed by a CA in caFile (PEM; several CAs may be
// concatenated, for a rotation). A peer without such a certificate fails
// the handshake before any RPC or GetFile reaches a handler. The files are
// read once, now: replacing them takes a restart.
func ServerTLSConfig(certFile, keyFile, caFile string) (*tls.Config, error) {
	cert, pool, err := loadTLSFiles(certFile, keyFile, caFile)
	if err != nil {
		return nil, err
	}
	if len(cert.Certificate) == 0 {
		return nil, fmt.Errorf("%w: a server needs a certificate and key", ErrTLSConfig)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
	}, nil
}

// ClientTLSConfig returns the TLS configuration for dialling peers under
// mutual TLS: it presents the certificate in certFile (key in keyFile) and
// accepts only servers whose certificate a CA in caFile signed for the
// host dialled (an IP or DNS subject alternative name). certFile and
// keyFile may both be empty for a client without a certificate (which a
// Server from ServerTLSConfig refuses, but an HTTPS API may accept).
func ClientTLSConfig(certFile, keyFile, caFile string) (*tls.Config, error) {
	cert, pool, err := loadTLSFiles(certFile, keyFile, caFile)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	if len(cert.Certificate) > 0 {
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// ServerTLS returns the grpc.ServerOption that makes a Server use mutual
// TLS (ServerTLSConfig): pass it to NewServer.
//
//	creds, err := grpctransport.ServerTLS("n1.crt", "n1.key", "ca.crt")
//	srv := grpctransport.NewServer(router, creds)
func ServerTLS(certFile, keyFile, caFile string) (grpc.ServerOption, error) {
	cfg, err := ServerTLSConfig(certFile, keyFile, caFile)
	if err != nil {
		return nil, err
	}
	return grpc.Creds(credentials.NewTLS(cfg)), nil
}

// ClientTLS returns the grpc.DialOption that makes a Transport use mutual
// TLS (ClientTLSConfig): add it to Options.DialOptions.
//
//	creds, err := grpctransport.ClientTLS("n1.crt", "n1.key", "ca.crt")
//	opts := grpctransport.DefaultOptions()
//	opts.DialOptions = append(opts.DialOptions, creds)
func ClientTLS(certFile, keyFile, caFile string) (grpc.DialOption, error) {
	cfg, err := ClientTLSConfig(certFile, keyFile, caFile)
	if err != nil {
		return nil, err
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(cfg)), nil
}

// loadTLSFiles reads a key pair (none if both names are empty) and a CA
// pool.
func loadTLSFiles(certFile, keyFile, caFile string) (tls.Certificate, *x509.CertPool, error) {
	var cert tls.Certificate
	switch {
	case certFile == "" && keyFile == "":
	case certFile == "" || keyFile == "":
		return cert, nil, fmt.Errorf("%w: a certificate (%q) needs its key (%q) and the other way round", ErrTLSConfig, certFile, keyFile)
	default:
		var err error
		if cert, err = tls.LoadX509KeyPair(certFile, keyFile); err != nil {
			return cert, nil, fmt.Errorf("%w: certificate %s, key %s: %w", ErrTLSConfig, certFile, keyFile, err)
		}
	}
	if caFile == "" {
		return cert, nil, fmt.Errorf("%w: no CA file", ErrTLSConfig)
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return cert, nil, fmt.Errorf("%w: CA: %w", ErrTLSConfig, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return cert, nil, fmt.Errorf("%w: CA file %s holds no PEM certificate", ErrTLSConfig, caFile)
	}
	return cert, pool, nil
}
