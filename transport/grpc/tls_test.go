package grpctransport

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	grpclib "google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/graft-raft/graft/internal/certgen"
	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/transport"
)

// pki is a cluster CA and a stranger's CA, with certificates issued by
// each, written to a temporary directory.
type pki struct {
	dir         string
	ca, otherCA string // CA certificate files
}

type certFiles struct{ cert, key string }

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir()}
	p.ca = p.writeCA(t, "ca")
	p.otherCA = p.writeCA(t, "other-ca")
	return p
}

func (p *pki) writeCA(t *testing.T, name string) string {
	t.Helper()
	ca, err := certgen.NewCA(name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f, _, err := ca.WriteFiles(p.dir, name)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// issue makes a certificate named name signed by the CA whose files are
// caFile and its key.
func (p *pki) issue(t *testing.T, caFile, name string, usage certgen.Usage) certFiles {
	t.Helper()
	certPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(caFile[:len(caFile)-len(".crt")] + ".key")
	if err != nil {
		t.Fatal(err)
	}
	ca, err := certgen.LoadCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := ca.Issue(name, []string{"127.0.0.1", "localhost"}, usage, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := pair.WriteFiles(p.dir, name)
	if err != nil {
		t.Fatal(err)
	}
	return certFiles{cert, key}
}

// countingHandler counts the requests that reach it.
type countingHandler struct {
	fakeHandler
	calls atomic.Int64
}

func (h *countingHandler) HandleRequestVote(ctx context.Context, req *raftpb.RequestVoteRequest) (*raftpb.RequestVoteResponse, error) {
	h.calls.Add(1)
	return h.fakeHandler.HandleRequestVote(ctx, req)
}

func (h *countingHandler) HandleAppendEntries(req *raftpb.AppendEntriesRequest, done func(*raftpb.AppendEntriesResponse, error)) {
	h.calls.Add(1)
	h.fakeHandler.HandleAppendEntries(req, done)
}

func (h *countingHandler) HandleGetFile(ctx context.Context, req *raftpb.GetFileRequest) (*raftpb.GetFileResponse, error) {
	h.calls.Add(1)
	return h.fakeHandler.HandleGetFile(ctx, req)
}

// serveTLS serves router over mutual TLS with the certificate given.
func serveTLS(t *testing.T, router *transport.Router, c certFiles, caFile string) string {
	t.Helper()
	creds, err := ServerTLS(c.cert, c.key, caFile)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(router, creds)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		<-served
	})
	return lis.Addr().String()
}

func tlsTransport(t *testing.T, dial ...grpclib.DialOption) *Transport {
	t.Helper()
	opts := DefaultOptions()
	opts.DialOptions = dial
	opts.MaxReconnectDelay = 50 * time.Millisecond
	return newTransport(t, opts)
}

func clientCreds(t *testing.T, c certFiles, caFile string) grpclib.DialOption {
	t.Helper()
	creds, err := ClientTLS(c.cert, c.key, caFile)
	if err != nil {
		t.Fatal(err)
	}
	return creds
}

// TestMutualTLS checks that a Server under mutual TLS serves peers with a
// certificate from the cluster's CA, and refuses, before any handler runs,
// raft RPCs and GetFile from a peer whose certificate another CA signed,
// from a client without a certificate and from a plaintext client; and
// that a client does not talk to a server the cluster's CA did not sign.
func TestMutualTLS(t *testing.T) {
	p := newPKI(t)
	server := p.issue(t, p.ca, "n1", certgen.Node)
	peer := p.issue(t, p.ca, "n2", certgen.Node)
	rogue := p.issue(t, p.otherCA, "rogue", certgen.Node)
	h := &countingHandler{}
	router := transport.NewRouter()
	if err := router.Register("g1", "n1", h); err != nil {
		t.Fatal(err)
	}
	router.SetFileHandler(h)
	addr := serveTLS(t, router, server, p.ca)
	vote := &raftpb.RequestVoteRequest{GroupId: "g1", ServerId: "n2", PeerId: "n1", Term: 7}
	file := &raftpb.GetFileRequest{ReaderId: 1, Filename: "data", Count: 10}

	t.Run("peer of the cluster", func(t *testing.T) {
		tr := tlsTransport(t, clientCreds(t, peer, p.ca))
		if resp, err := tr.RequestVote(ctxT(t), addr, vote); err != nil || !resp.Granted {
			t.Fatalf("RequestVote = %v, %v", resp, err)
		}
		if resp, err := tr.GetFile(ctxT(t), addr, file); err != nil || len(resp.Data) != 10 {
			t.Fatalf("GetFile = %v, %v", resp, err)
		}
		pl, err := tr.Pipeline(ctxT(t), addr)
		if err != nil {
			t.Fatal(err)
		}
		defer pl.Close()
		if err := pl.Send(&raftpb.AppendEntriesRequest{GroupId: "g1", PeerId: "n1", Term: 1}); err != nil {
			t.Fatal(err)
		}
		if _, err := pl.Recv(); err != nil {
			t.Fatalf("pipeline: %v", err)
		}
	})
	served := h.calls.Load()
	if served != 3 {
		t.Fatalf("%d requests reached the handler, want 3", served)
	}

	// A client certificate need not match the host it connects from, so a
	// stranger's only hope is its CA: it knows ours and verifies the server.
	for _, tc := range []struct {
		name string
		dial grpclib.DialOption
	}{
		{"certificate from another CA", clientCreds(t, rogue, p.ca)},
		{"no client certificate", clientCreds(t, certFiles{}, p.ca)},
		{"plaintext", grpclib.WithTransportCredentials(insecure.NewCredentials())},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := tlsTransport(t, tc.dial)
			_, err := tr.RequestVote(ctxT(t), addr, vote)
			wantRefused(t, "RequestVote", err)
			_, err = tr.GetFile(ctxT(t), addr, file)
			wantRefused(t, "GetFile", err)
			_, err = tr.AppendEntries(ctxT(t), addr, &raftpb.AppendEntriesRequest{GroupId: "g1", PeerId: "n1", Term: 9})
			wantRefused(t, "AppendEntries", err)
			if pl, err := tr.Pipeline(ctxT(t), addr); err == nil {
				_ = pl.Send(&raftpb.AppendEntriesRequest{GroupId: "g1", PeerId: "n1", Term: 9})
				_, err = pl.Recv()
				pl.Close()
				wantRefused(t, "Pipeline", err)
			}
		})
	}
	if n := h.calls.Load(); n != served {
		t.Fatalf("%d refused requests reached the handler", n-served)
	}

	t.Run("server from another CA", func(t *testing.T) {
		// A peer of the cluster does not send to an impostor.
		impostor := &countingHandler{}
		ir := transport.NewRouter()
		if err := ir.Register("g1", "n1", impostor); err != nil {
			t.Fatal(err)
		}
		ir.SetFileHandler(impostor)
		iaddr := serveTLS(t, ir, rogue, p.ca) // it even accepts our certificates
		tr := tlsTransport(t, clientCreds(t, peer, p.ca))
		_, err := tr.RequestVote(ctxT(t), iaddr, vote)
		wantRefused(t, "RequestVote to an impostor", err)
		_, err = tr.GetFile(ctxT(t), iaddr, file)
		wantRefused(t, "GetFile from an impostor", err)
		if n := impostor.calls.Load(); n != 0 {
			t.Fatalf("%d requests reached the impostor", n)
		}
	})
}

func wantRefused(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: accepted", what)
	}
	if code := status.Code(err); code != codes.Unavailable || !errors.Is(err, transport.ErrUnreachable) {
		t.Fatalf("%s: %v (code %v), want Unavailable and ErrUnreachable", what, err, code)
	}
}

func TestTLSConfigErrors(t *testing.T) {
	p := newPKI(t)
	n1 := p.issue(t, p.ca, "n1", certgen.Node)
	n2 := p.issue(t, p.ca, "n2", certgen.Node)
	garbage := filepath.Join(p.dir, "garbage")
	if err := os.WriteFile(garbage, []byte("not PEM"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name          string
		cert, key, ca string
		clientAllowed bool
	}{
		{"no CA", n1.cert, n1.key, "", false},
		{"missing CA", n1.cert, n1.key, filepath.Join(p.dir, "nope"), false},
		{"CA not PEM", n1.cert, n1.key, garbage, false},
		{"cert without key", n1.cert, "", p.ca, false},
		{"key of another cert", n1.cert, n2.key, p.ca, false},
		{"cert not PEM", garbage, n1.key, p.ca, false},
		{"no cert", "", "", p.ca, true},
	} {
		if _, err := ServerTLS(tc.cert, tc.key, tc.ca); !errors.Is(err, ErrTLSConfig) {
			t.Errorf("ServerTLS %s: %v, want ErrTLSConfig", tc.name, err)
		}
		_, err := ClientTLS(tc.cert, tc.key, tc.ca)
		if tc.clientAllowed != (err == nil) || (err != nil && !errors.Is(err, ErrTLSConfig)) {
			t.Errorf("ClientTLS %s: %v", tc.name, err)
		}
	}
	if _, err := ServerTLSConfig(n1.cert, n1.key, p.ca); err != nil {
		t.Fatal(err)
	}
}
