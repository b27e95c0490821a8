package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"

	"github.com/graft-raft/graft/kv"
	"github.com/graft-raft/graft/snapshot"
	"github.com/graft-raft/graft/throttle"
	"github.com/graft-raft/graft/transport"
	grpctransport "github.com/graft-raft/graft/transport/grpc"
)

// process is the graft plumbing one process shares among its nodes: one
// gRPC server and Router, one client Transport, one snapshot FileService
// and one Throttle.
type process struct {
	log      *slog.Logger
	router   *transport.Router
	rpc      *grpctransport.Server
	trans    *grpctransport.Transport
	files    *snapshot.FileService
	throttle *throttle.Throttle
	resolver *kv.Resolver
	sec      security
	// httpTLS and httpClientTLS are the HTTP API's server and client
	// TLS configurations; nil for plain HTTP.
	httpTLS, httpClientTLS *tls.Config
	serving                sync.WaitGroup

	nodes []*node
}

// node is one kv.Server and its HTTP server.
type node struct {
	srv     *kv.Server
	http    *http.Server
	httpLis net.Listener
}

// security is a process's TLS files and tokens; the zero value is none.
type security struct {
	// certFile, keyFile and caFile (PEM; all three or none) turn on
	// mutual TLS between peers, for raft RPCs and snapshot files, and
	// HTTPS for the HTTP API unless plainHTTP.
	certFile, keyFile, caFile string
	plainHTTP                 bool
	// apiToken and adminToken are kv.Config's APIToken and AdminToken.
	apiToken, adminToken string
}

func (s security) tls() bool { return s.certFile != "" || s.keyFile != "" || s.caFile != "" }

// check reports flags given without the others they need.
func (s security) check() error {
	if s.tls() && (s.certFile == "" || s.keyFile == "" || s.caFile == "") {
		return errors.New("--tls-cert, --tls-key and --tls-ca go together: give all three or none")
	}
	if s.plainHTTP && !s.tls() {
		return errors.New("--http-tls=false only makes sense with --tls-cert, --tls-key and --tls-ca")
	}
	return nil
}

// newProcess sets up the shared plumbing. throttleBytes is the snapshot
// bandwidth limit in bytes per second (0: none); resolve maps peer ids to
// the addresses to dial instead of the configured ones; sec turns on TLS
// and tokens.
func newProcess(log *slog.Logger, throttleBytes int64, resolve map[string]string, sec security) (*process, error) {
	topts := throttle.Options{BytesPerSecond: throttleBytes}
	if err := topts.Validate(); err != nil {
		return nil, err
	}
	if err := sec.check(); err != nil {
		return nil, err
	}
	var serverOpts []grpc.ServerOption
	opts := grpctransport.DefaultOptions()
	p := &process{log: log, router: transport.NewRouter(), resolver: kv.NewResolver(resolve), sec: sec}
	if sec.tls() {
		creds, err := grpctransport.ServerTLS(sec.certFile, sec.keyFile, sec.caFile)
		if err != nil {
			return nil, err
		}
		serverOpts = append(serverOpts, creds)
		dial, err := grpctransport.ClientTLS(sec.certFile, sec.keyFile, sec.caFile)
		if err != nil {
			return nil, err
		}
		opts.DialOptions = append(opts.DialOptions, dial)
		if !sec.plainHTTP {
			if p.httpTLS, err = grpctransport.ServerTLSConfig(sec.certFile, sec.keyFile, sec.caFile); err != nil {
				return nil, err
			}
			// Clients of the API need no certificate; a node's own
			// calls present one, which authenticates them.
			p.httpTLS.ClientAuth = tls.VerifyClientCertIfGiven
			if p.httpClientTLS, err = grpctransport.ClientTLSConfig(sec.certFile, sec.keyFile, sec.caFile); err != nil {
				return nil, err
			}
		}
	}
	if throttleBytes > 0 {
		p.throttle = throttle.New(topts)
	}
	p.files = snapshot.NewFileService(snapshot.FileServiceOptions{Throttle: p.throttle, Logger: log})
	p.router.SetFileHandler(p.files)
	p.rpc = grpctransport.NewServer(p.router, serverOpts...)
	opts.Resolve = p.resolver.Resolve
	p.trans = grpctransport.New(opts)
	return p, nil
}

// serveRaft serves raft RPCs on lis until shutdown.
func (p *process) serveRaft(lis net.Listener) {
	p.serving.Go(func() {
		if err := p.rpc.Serve(lis); err != nil {
			p.log.Error("raft server stopped", "addr", lis.Addr(), "err", err)
		}
	})
}

// startNode starts a node and serves its HTTP API on httpLis.
func (p *process) startNode(cfg kv.Config, httpLis net.Listener) (*node, error) {
	cfg.Transport = p.trans
	cfg.Router = p.router
	cfg.FileService = p.files
	cfg.Throttle = p.throttle
	cfg.Resolver = p.resolver
	cfg.APIToken, cfg.AdminToken = p.sec.apiToken, p.sec.adminToken
	cfg.HTTPClientTLS = p.httpClientTLS
	srv, err := kv.NewServer(cfg)
	if err != nil {
		return nil, err
	}
	n := &node{srv: srv, httpLis: httpLis, http: &http.Server{
		Handler:           srv.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// Room for ?prev= with a value at the limit, percent-encoded.
		MaxHeaderBytes: max(http.DefaultMaxHeaderBytes, 3*(cfg.MaxKeySize+cfg.MaxValueSize)+64<<10),
		ErrorLog:       slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
		TLSConfig:      p.httpTLS,
	}}
	p.nodes = append(p.nodes, n)
	p.serving.Go(func() {
		serve := n.http.Serve
		if p.httpTLS != nil {
			serve = func(l net.Listener) error { return n.http.ServeTLS(l, "", "") }
		}
		if err := serve(httpLis); !errors.Is(err, http.ErrServerClosed) {
			p.log.Error("HTTP server stopped", "addr", httpLis.Addr(), "err", err)
		}
	})
	return n, nil
}

// shutdown stops gracefully: HTTP servers finish the requests in flight
// (writes wait for their entries to apply); a leader hands leadership to
// a caught-up peer if handOff; nodes apply what is committed and close
// pebble; then the shared plumbing stops.
func (p *process) shutdown(handOff bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	var wg sync.WaitGroup
	for _, n := range p.nodes {
		wg.Go(func() {
			if err := n.http.Shutdown(ctx); err != nil {
				p.log.Warn("HTTP server shutdown", "err", err)
			}
		})
	}
	wg.Wait()
	for _, n := range p.nodes {
		if handOff && n.srv.Node().IsLeader() {
			tctx, tcancel := context.WithTimeout(ctx, 3*time.Second)
			if err := n.srv.Node().TransferLeadership(tctx, ""); err != nil {
				p.log.Info("shutting down without handing leadership over", "err", err)
			}
			tcancel()
		}
		errs = append(errs, n.srv.Close())
	}
	p.rpc.Stop()
	errs = append(errs, p.trans.Close())
	p.files.Close()
	p.serving.Wait()
	return errors.Join(errs...)
}

// wait returns on SIGINT or SIGTERM, with nil, or when a node stops
// after a fatal error, with that error. A second signal exits at once.
func (p *process) wait() error {
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	failed := make(chan error, len(p.nodes))
	quit := make(chan struct{})
	defer close(quit)
	for _, n := range p.nodes {
		go func() {
			select {
			case err := <-n.srv.Failed():
				failed <- err
			case <-quit:
			}
		}()
	}
	var err error
	select {
	case s := <-sig:
		p.log.Info("shutting down", "signal", s.String())
	case err = <-failed:
		p.log.Error("shutting down: a node stopped", "err", err)
	}
	go func() {
		<-sig
		fmt.Fprintln(os.Stderr, "graftkv: second signal; exiting without a clean shutdown")
		os.Exit(1)
	}()
	return err
}

// listen listens on addr, explaining a port in use.
func listen(what, addr string) (net.Listener, error) {
	lis, err := net.Listen("tcp", addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("%s address %s is already in use (is another graftkv running?)", what, addr)
	}
	if err != nil {
		return nil, fmt.Errorf("%s address: %w", what, err)
	}
	return lis, nil
}

// advertise turns a listen address into one others can dial: an empty or
// unspecified host (":8001", "0.0.0.0:8001") takes fallbackHost, the host
// of the node's raft address, or else the machine's hostname.
func advertise(listen, fallbackHost string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("%q is not host:port: %w", listen, err)
	}
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return listen, nil
	}
	if ip := net.ParseIP(fallbackHost); fallbackHost != "" && (ip == nil || !ip.IsUnspecified()) {
		return net.JoinHostPort(fallbackHost, port), nil
	}
	h, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("cannot tell others how to reach %q: %w", listen, err)
	}
	return net.JoinHostPort(h, port), nil
}

// bytesFlag is a byte count flag: "1048576", "512KiB", "1MiB", "10MB".
type bytesFlag int64

func (b *bytesFlag) String() string { return strconv.FormatInt(int64(*b), 10) }
func (b *bytesFlag) Type() string   { return "bytes" }

func (b *bytesFlag) Set(s string) error {
	units := []struct {
		suffix string
		mult   int64
	}{
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
		{"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000},
		{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1},
	}
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range units {
		if rest, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(rest), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return fmt.Errorf("%q is not a byte count (such as 1048576, 512KiB or 1MiB)", s)
	}
	*b = bytesFlag(n * mult)
	return nil
}
