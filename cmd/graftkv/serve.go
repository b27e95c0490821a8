package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/graft-raft/graft/internal/conf"
	"github.com/graft-raft/graft/kv"
)

func serveCommand() *cobra.Command {
	d := kv.DefaultConfig()
	var (
		id, raftAddr, httpAddr, dataDir, peers string
		resolve                                []string
		snapshotThrottle                       bytesFlag
		maxKey                                 = bytesFlag(d.MaxKeySize)
		maxValue                               = bytesFlag(d.MaxValueSize)
		cfg                                    = d
		sec                                    security
		httpTLS                                bool
		apiTokenFile, adminTokenFile           string
	)
	cmd := &cobra.Command{
		Use:   "serve --id ID --raft-addr HOST:PORT --http-addr HOST:PORT --data-dir DIR [--peers ID=HOST:PORT,...]",
		Short: "Run one graftkv node",
		Long: `Run one graftkv node until SIGINT or SIGTERM, then shut down gracefully.

--peers bootstraps a new cluster: give every node the same list (this node
included) and an empty data dir. It is ignored, with a log line, once the
data dir holds state. A node joining an existing cluster starts without
--peers and waits to be added (POST /v1/admin/peers on the leader).

--tls-cert, --tls-key and --tls-ca (PEM files) turn on mutual TLS between
peers: the raft port (RPCs and snapshot files) accepts only peers with a
certificate the CA signed, and this node verifies its peers the same way
(their certificates must name the host dialled). The HTTP API is then HTTPS
with the same certificate (--http-tls=false keeps it plain); its clients
need no certificate. 'graftkv gen-certs' makes test certificates.

--admin-token (or --admin-token-file) protects /v1/admin/*; --api-token
(or --api-token-file) protects everything else: requests need
"Authorization: Bearer <token>" (401 without, 403 if wrong). Give every node
the same tokens; prefer the file flags (a command line is visible to other
users of the machine) and HTTPS (a token over plain HTTP can be sniffed).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
			cfg.ID, cfg.DataDir = id, dataDir
			cfg.MaxKeySize, cfg.MaxValueSize = int(maxKey), int(maxValue)
			ps, err := conf.ParsePeers(peers)
			if err != nil {
				return fmt.Errorf("--peers: %w", err)
			}
			cfg.Peers = ps
			sec.plainHTTP = !httpTLS
			if sec.apiToken, err = tokenFlag(cmd, "api-token", sec.apiToken, apiTokenFile); err != nil {
				return err
			}
			if sec.adminToken, err = tokenFlag(cmd, "admin-token", sec.adminToken, adminTokenFile); err != nil {
				return err
			}
			if err := sec.check(); err != nil {
				return err
			}
			overrides := map[string]string{}
			for _, r := range resolve {
				p, err := conf.ParsePeer(r)
				if err != nil {
					return fmt.Errorf("--resolve: %w", err)
				}
				overrides[p.ID] = p.Addr
			}
			// Others reach this node's HTTP API at the host they know it by.
			raftHost, _, _ := net.SplitHostPort(raftAddr)
			for _, p := range ps {
				if p.ID == id {
					raftHost, _, _ = net.SplitHostPort(p.Addr)
				}
			}
			if cfg.HTTPAddr, err = advertise(httpAddr, raftHost); err != nil {
				return fmt.Errorf("--http-addr: %w", err)
			}
			return serve(log, cfg, raftAddr, httpAddr, int64(snapshotThrottle), overrides, sec)
		},
	}
	f := cmd.Flags()
	f.StringVar(&id, "id", "", "this node's peer id (required)")
	f.StringVar(&raftAddr, "raft-addr", "", "HOST:PORT to listen on for raft RPCs (required)")
	f.StringVar(&httpAddr, "http-addr", "", "HOST:PORT to listen on for the HTTP API (required)")
	f.StringVar(&dataDir, "data-dir", "", "directory for the node's log, snapshots and database (required)")
	f.StringVar(&peers, "peers", "", "ID=HOST:PORT,... initial cluster (raft addresses), used only on an empty data dir")
	f.StringArrayVar(&resolve, "resolve", nil, "ID=HOST:PORT: dial this address for peer ID instead of its configured one (repeatable)")
	f.DurationVar(&cfg.SnapshotInterval, "snapshot-interval", d.SnapshotInterval, "take a snapshot this often (0: never by time)")
	f.Uint64Var(&cfg.SnapshotLogEntries, "snapshot-log-entries", d.SnapshotLogEntries, "take a snapshot every this many applied entries (0: never by count)")
	f.Var(&snapshotThrottle, "snapshot-throttle", "snapshot transfer limit in bytes/s, sending and receiving (0: unlimited)")
	f.DurationVar(&cfg.ElectionTimeout, "election-timeout", d.ElectionTimeout, "raft election timeout; heartbeats go every tenth of it")
	f.Var(&maxKey, "max-key-size", "largest key accepted, in bytes")
	f.Var(&maxValue, "max-value-size", "largest value accepted, in bytes")
	f.StringVar(&sec.certFile, "tls-cert", "", "PEM certificate of this node, for mutual TLS between peers and HTTPS")
	f.StringVar(&sec.keyFile, "tls-key", "", "PEM private key of --tls-cert")
	f.StringVar(&sec.caFile, "tls-ca", "", "PEM certificate(s) of the CA that signs the nodes' certificates")
	f.BoolVar(&httpTLS, "http-tls", true, "with the --tls-* flags, serve the HTTP API over HTTPS")
	f.StringVar(&sec.apiToken, "api-token", "", "bearer token required on the keys, status, metrics and page (default: open)")
	f.StringVar(&apiTokenFile, "api-token-file", "", "file holding the --api-token")
	f.StringVar(&sec.adminToken, "admin-token", "", "bearer token required on /v1/admin/* (default: the --api-token, or open)")
	f.StringVar(&adminTokenFile, "admin-token-file", "", "file holding the --admin-token")
	for _, name := range []string{"id", "raft-addr", "http-addr", "data-dir"} {
		_ = cmd.MarkFlagRequired(name)
	}
	return cmd
}

// tokenFlag returns the token of --name or --name-file (not both); a
// file's surrounding whitespace is dropped.
func tokenFlag(cmd *cobra.Command, name, value, file string) (string, error) {
	if file == "" {
		return value, nil
	}
	if cmd.Flags().Changed(name) {
		return "", fmt.Errorf("give --%s or --%s-file, not both", name, name)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("--%s-file: %w", name, err)
	}
	token := strings.TrimSpace(string(b))
	if token == "" {
		return "", fmt.Errorf("--%s-file: %s is empty", name, file)
	}
	return token, nil
}

func serve(log *slog.Logger, cfg kv.Config, raftAddr, httpAddr string, throttleBytes int64, resolve map[string]string, sec security) error {
	cfg.Logger = log
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return err
	}
	raftLis, err := listen("raft", raftAddr)
	if err != nil {
		return err
	}
	httpLis, err := listen("HTTP", httpAddr)
	if err != nil {
		raftLis.Close()
		return err
	}
	p, err := newProcess(log, throttleBytes, resolve, sec)
	if err != nil {
		raftLis.Close()
		httpLis.Close()
		return err
	}
	p.serveRaft(raftLis)
	if _, err := p.startNode(cfg, httpLis); err != nil {
		httpLis.Close()
		_ = p.shutdown(false)
		return err
	}
	log.Info("graftkv serving", "id", cfg.ID, "raft", raftLis.Addr().String(), "http", httpLis.Addr().String(),
		"advertised_http", cfg.HTTPAddr, "data_dir", cfg.DataDir, "mtls", sec.tls(), "https", p.httpTLS != nil,
		"api_token", sec.apiToken != "", "admin_token", sec.adminToken != "")
	failed := p.wait()
	start := time.Now()
	err = p.shutdown(failed == nil)
	log.Info("graftkv stopped", "took", time.Since(start).Round(time.Millisecond), "err", err)
	return errors.Join(failed, err)
}
