package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/graft-raft/graft/internal/certgen"
)

func genCertsCommand() *cobra.Command {
	var (
		out           string
		hosts, nodes  []string
		nodeHosts     []string
		clients       []string
		validity      time.Duration
		defaultHosts  = []string{"127.0.0.1", "::1", "localhost"}
		defaultNodes  = []string{"n1", "n2", "n3"}
		defaultClient = []string{"client"}
	)
	cmd := &cobra.Command{
		Use:   "gen-certs --out DIR [--hosts H,...] [--nodes N,...] [--node N=H,H...] [--client NAME]",
		Short: "Make a CA and certificates for a graftkv cluster's mutual TLS (for tests and trials)",
		Long: `Make a certificate authority and the certificates it signs, as PEM files in DIR:

  ca.crt, ca.key        the CA (reused if DIR already holds it, to add nodes later)
  NODE.crt, NODE.key    one per node: TLS server and client, with the hosts as
                        IP and DNS subject alternative names
  NAME.crt, NAME.key    client certificates (graftctl --cert/--key, curl --cert)

Every node is started with --tls-ca DIR/ca.crt --tls-cert DIR/NODE.crt
--tls-key DIR/NODE.key. A node's certificate must name the host its peers
dial (the address in --peers, or in --resolve). Keys are ECDSA P-256,
written with mode 0600; existing files are never overwritten.

For production, issue certificates from your own CA and keep ca.key offline.`,
		Example: `  graftkv gen-certs --out certs                          # n1, n2, n3 on 127.0.0.1/::1/localhost
  graftkv gen-certs --out certs --nodes a,b,c --hosts 10.0.0.1,10.0.0.2,10.0.0.3
  graftkv gen-certs --out certs --node n4=10.0.0.4,node4.example`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("nodes") && len(nodeHosts) > 0 {
				nodes = nil // only the --node ones
			}
			return genCerts(cmd.OutOrStdout(), out, hosts, nodes, nodeHosts, clients, validity)
		},
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "", "directory for the files (created if missing; required)")
	f.StringSliceVar(&hosts, "hosts", defaultHosts, "IP addresses and DNS names of the --nodes certificates")
	f.StringSliceVar(&nodes, "nodes", defaultNodes, "node names: one certificate each, for the --hosts")
	f.StringArrayVar(&nodeHosts, "node", nil, "NAME=HOST,HOST...: a node certificate for just these hosts (repeatable)")
	f.StringSliceVar(&clients, "client", defaultClient, "client certificate names (none: --client '')")
	f.DurationVar(&validity, "valid-for", 365*24*time.Hour, "validity of the certificates")
	_ = cmd.MarkFlagRequired("out")
	return cmd
}

// genCerts writes the CA (unless out holds one) and the certificates.
func genCerts(w io.Writer, out string, hosts, nodes, nodeHosts, clients []string, validity time.Duration) error {
	type job struct {
		name  string
		hosts []string
		usage certgen.Usage
	}
	var jobs []job
	for _, n := range nodes {
		if n = strings.TrimSpace(n); n != "" {
			jobs = append(jobs, job{n, hosts, certgen.Node})
		}
	}
	for _, nh := range nodeHosts {
		name, hs, ok := strings.Cut(nh, "=")
		if !ok || name == "" || hs == "" {
			return fmt.Errorf("--node %q: want NAME=HOST[,HOST]", nh)
		}
		jobs = append(jobs, job{name, strings.Split(hs, ","), certgen.Node})
	}
	for _, c := range clients {
		if c = strings.TrimSpace(c); c != "" {
			jobs = append(jobs, job{c, nil, certgen.Client})
		}
	}
	seen := map[string]bool{"ca": true}
	for _, j := range jobs {
		if seen[j.name] || strings.ContainsAny(j.name, `/\`) || strings.HasPrefix(j.name, ".") {
			return fmt.Errorf("certificate name %q is repeated, reserved or not a plain file name", j.name)
		}
		seen[j.name] = true
		if _, err := os.Stat(filepath.Join(out, j.name+".key")); err == nil {
			return fmt.Errorf("%s already exists: not overwriting it", filepath.Join(out, j.name+".key"))
		}
	}
	if err := os.MkdirAll(out, 0o700); err != nil {
		return err
	}
	ca, reused, err := loadOrMakeCA(out, validity)
	if err != nil {
		return err
	}
	if reused {
		fmt.Fprintf(w, "using the CA in %s\n", filepath.Join(out, "ca.crt"))
	} else {
		fmt.Fprintf(w, "made a CA: %s (keep %s secret)\n", filepath.Join(out, "ca.crt"), filepath.Join(out, "ca.key"))
	}
	for _, j := range jobs {
		pair, err := ca.Issue(j.name, j.hosts, j.usage, validity)
		if err != nil {
			return fmt.Errorf("%s: %w", j.name, err)
		}
		cert, key, err := pair.WriteFiles(out, j.name)
		if err != nil {
			return err
		}
		kind := "client"
		if j.usage == certgen.Node {
			kind = "node, for " + strings.Join(j.hosts, ", ")
		}
		fmt.Fprintf(w, "%s, %s (%s)\n", cert, key, kind)
	}
	return nil
}

func loadOrMakeCA(dir string, validity time.Duration) (*certgen.CA, bool, error) {
	certPEM, cerr := os.ReadFile(filepath.Join(dir, "ca.crt"))
	keyPEM, kerr := os.ReadFile(filepath.Join(dir, "ca.key"))
	switch {
	case cerr == nil && kerr == nil:
		ca, err := certgen.LoadCA(certPEM, keyPEM)
		return ca, true, err
	case !errors.Is(cerr, fs.ErrNotExist) || !errors.Is(kerr, fs.ErrNotExist):
		return nil, false, fmt.Errorf("%s holds part of a CA (ca.crt: %v, ca.key: %v)", dir, cerr, kerr)
	}
	ca, err := certgen.NewCA("graftkv cluster CA", validity)
	if err != nil {
		return nil, false, err
	}
	if _, _, err := ca.WriteFiles(dir, "ca"); err != nil {
		return nil, false, err
	}
	return ca, false, nil
}
