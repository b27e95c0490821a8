// Command graftctl administers and queries a graftkv cluster over its HTTP
// API.
//
//	graftctl --addr 127.0.0.1:8001 status
//	graftctl --addr 127.0.0.1:8001 put greeting hello
//	graftctl --addr 127.0.0.1:8001 put greeting hi --prev hello
//	graftctl --addr 127.0.0.1:8001 put lock me --prev-exist=false
//	graftctl --addr 127.0.0.1:8001 get greeting [--consistency=stale]
//	graftctl --addr 127.0.0.1:8001 delete greeting
//	graftctl --addr 127.0.0.1:8001 snapshot
//	graftctl --addr 127.0.0.1:8001 transfer-leader n2
//	graftctl --addr 127.0.0.1:8001 add-peer n4 127.0.0.1:7004
//	graftctl --addr 127.0.0.1:8001 remove-peer n4
//	graftctl --addr 127.0.0.1:8001 change-peers n1=127.0.0.1:7001,n2=127.0.0.1:7002,n3=127.0.0.1:7003
//	graftctl --addr 127.0.0.1:8003 watch
//
// Any node will do: requests a follower cannot serve are redirected (307)
// to the leader, and graftctl re-sends them there, body included. The
// address defaults to $GRAFTCTL_ADDR.
//
// For a cluster started with tokens, --token (default $GRAFTCTL_TOKEN) is
// sent as "Authorization: Bearer <token>". For HTTPS, --cacert names the CA
// of the nodes' certificates (a HOST:PORT address then means https://);
// --cert and --key present a client certificate.
//
// Output is for humans unless --json is given, which prints the server's
// JSON answer. graftctl exits 0 on success and 1 on any error, with a
// message on stderr that includes the server's error.
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes graftctl with args and returns its exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(stderr, "graftctl: %v\n", err)
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintln(stderr, "Run 'graftctl --help' for usage.")
		}
		return 1
	}
	return 0
}

// usageError is a mistake on the command line.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// app holds the global flags.
type app struct {
	addr    string
	conn    clientOptions
	json    bool
	timeout time.Duration
	verbose bool
	stdout  io.Writer
	stderr  io.Writer
}

func (a *app) client() (*client, error) {
	var trace io.Writer
	if a.verbose {
		trace = a.stderr
	}
	conn := a.conn
	if conn.token == "" {
		conn.token = os.Getenv("GRAFTCTL_TOKEN")
	}
	return newClient(a.addr, trace, conn)
}

// ctx bounds a one-shot command by --timeout.
func (a *app) ctx(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	if a.timeout <= 0 {
		return context.WithCancel(cmd.Context())
	}
	return context.WithTimeout(cmd.Context(), a.timeout)
}

// exactArgs is cobra.ExactArgs with the argument names in the message.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != len(names) {
			return usageError{fmt.Errorf("%s takes %d argument(s) (%s), got %d", cmd.Name(), len(names), strings.Join(names, " "), len(args))}
		}
		return nil
	}
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	a := &app{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "graftctl",
		Short:         "Query and administer a graftkv cluster",
		Long:          "graftctl talks to one graftkv node's HTTP API; requests that need the leader follow the node's redirect to it.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&a.addr, "addr", os.Getenv("GRAFTCTL_ADDR"), "HTTP address of any graftkv node, HOST:PORT or http://HOST:PORT (default $GRAFTCTL_ADDR)")
	pf.BoolVar(&a.json, "json", false, "print the server's JSON answer instead of a human summary")
	pf.DurationVar(&a.timeout, "timeout", 10*time.Second, "deadline of a command (for watch: of each poll); 0 for none")
	pf.BoolVarP(&a.verbose, "verbose", "v", false, "report redirects on stderr")
	// Not the flag's default: --help would print the token.
	pf.StringVar(&a.conn.token, "token", "", "bearer token for a node started with --api-token or --admin-token (default $GRAFTCTL_TOKEN)")
	pf.StringVar(&a.conn.caFile, "cacert", "", "PEM file of the CA that signed the nodes' certificates (HTTPS)")
	pf.StringVar(&a.conn.certFile, "cert", "", "PEM client certificate to present (HTTPS)")
	pf.StringVar(&a.conn.keyFile, "key", "", "PEM key of --cert")
	pf.BoolVar(&a.conn.insecure, "insecure-skip-verify", false, "HTTPS without checking the node's certificate (tests only)")

	root.AddCommand(
		statusCmd(a), putCmd(a), getCmd(a), deleteCmd(a),
		snapshotCmd(a), transferCmd(a), addPeerCmd(a), removePeerCmd(a), changePeersCmd(a),
		watchCmd(a),
	)
	return root
}

// printJSON writes body, which the server sent as JSON, and a newline.
func (a *app) printJSON(body []byte) {
	b := strings.TrimRight(string(body), "\n")
	if b == "" {
		b = "{}"
	}
	fmt.Fprintln(a.stdout, b)
}

func statusCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the node's role, term, leader, indexes, snapshot and configuration",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			s, r, err := getStatus(ctx, c)
			if err != nil {
				return fmt.Errorf("status: %w", err)
			}
			if a.json {
				a.printJSON(r.Body)
				return nil
			}
			return printStatus(a.stdout, s)
		},
	}
}

// getStatus fetches and decodes GET /v1/status.
func getStatus(ctx context.Context, c *client) (*status, *response, error) {
	r, err := c.call(ctx, "GET", c.url("/v1/status", nil), nil)
	if err != nil {
		return nil, r, err
	}
	var s status
	if err := json.Unmarshal(r.Body, &s); err != nil {
		return nil, r, fmt.Errorf("bad status answer from %s: %v", r.URL, err)
	}
	return &s, r, nil
}

// indexOf returns the "index" field of a JSON answer, if any.
func indexOf(body []byte) (uint64, bool) {
	var v struct {
		Index *uint64 `json:"index"`
	}
	if json.Unmarshal(body, &v) != nil || v.Index == nil {
		return 0, false
	}
	return *v.Index, true
}

// done prints the human summary of a write: msg and the index, if the
// server sent one.
func (a *app) done(r *response, msg string) {
	if a.json {
		a.printJSON(r.Body)
		return
	}
	if idx, ok := indexOf(r.Body); ok {
		msg += fmt.Sprintf(" (index %d)", idx)
	}
	fmt.Fprintln(a.stdout, msg)
}

func checkKey(key string) error {
	if key == "" {
		return usageError{errors.New("the key is empty")}
	}
	return nil
}

func putCmd(a *app) *cobra.Command {
	var prev string
	var prevExist bool
	cmd := &cobra.Command{
		Use:   "put KEY VALUE",
		Short: "Set KEY to VALUE (optionally compare-and-set)",
		Long: "Set KEY to VALUE once committed and applied.\n" +
			"--prev V sets it only if its current value is V; --prev-exist=false only if it does not exist.",
		Args: exactArgs("KEY", "VALUE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			key, value := args[0], args[1]
			if err := checkKey(key); err != nil {
				return err
			}
			q := url.Values{}
			if cmd.Flags().Changed("prev") {
				q.Set("prev", prev)
			}
			if cmd.Flags().Changed("prev-exist") {
				if prevExist {
					return usageError{errors.New("--prev-exist=true is not a condition the server knows; use --prev-exist=false (create only) or --prev VALUE")}
				}
				q.Set("prev-exist", "false")
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			r, err := c.call(ctx, "PUT", c.url(kvPath(key), q), []byte(value))
			if err != nil {
				var ae *apiError
				if errors.As(err, &ae) && ae.Code == 412 {
					return fmt.Errorf("put %q: condition failed: %w", key, err)
				}
				return fmt.Errorf("put %q: %w", key, err)
			}
			a.done(r, "OK")
			return nil
		},
	}
	cmd.Flags().StringVar(&prev, "prev", "", "compare-and-set: write only if the current value is this")
	cmd.Flags().BoolVar(&prevExist, "prev-exist", true, "false: create only, fail if the key exists")
	return cmd
}

func getCmd(a *app) *cobra.Command {
	var consistency string
	cmd := &cobra.Command{
		Use:   "get KEY",
		Short: "Print KEY's value",
		Long: "Print KEY's value followed by a newline; exit 1 if it is missing.\n" +
			"Reads are linearizable (served through the leader) unless --consistency=stale, which reads the node's local state.\n" +
			"With --json: {\"key\": ..., \"value\": ...} (\"value_base64\" instead of \"value\" if the value is not UTF-8).",
		Args: exactArgs("KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			key := args[0]
			if err := checkKey(key); err != nil {
				return err
			}
			q := url.Values{}
			switch consistency {
			case "", "linearizable":
			case "stale":
				q.Set("consistency", "stale")
			default:
				return usageError{fmt.Errorf("--consistency=%q: want linearizable or stale", consistency)}
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			r, err := c.call(ctx, "GET", c.url(kvPath(key), q), nil)
			if err != nil {
				return fmt.Errorf("get %q: %w", key, err)
			}
			if a.json {
				out := map[string]string{"key": key}
				if utf8.Valid(r.Body) {
					out["value"] = string(r.Body)
				} else {
					out["value_base64"] = base64.StdEncoding.EncodeToString(r.Body)
				}
				b, _ := json.Marshal(out)
				fmt.Fprintln(a.stdout, string(b))
				return nil
			}
			_, err = a.stdout.Write(append(r.Body, '\n'))
			return err
		},
	}
	cmd.Flags().StringVar(&consistency, "consistency", "linearizable", "linearizable or stale")
	return cmd
}

func deleteCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "delete KEY",
		Short: "Delete KEY; exit 1 if it is missing",
		Args:  exactArgs("KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			key := args[0]
			if err := checkKey(key); err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			r, err := c.call(ctx, "DELETE", c.url(kvPath(key), nil), nil)
			if err != nil {
				return fmt.Errorf("delete %q: %w", key, err)
			}
			a.done(r, "deleted")
			return nil
		},
	}
}

func snapshotCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "snapshot",
		Short: "Make the node take a snapshot now",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			r, err := c.call(ctx, "POST", c.url("/v1/admin/snapshot", nil), nil)
			if err != nil {
				return fmt.Errorf("snapshot: %w", err)
			}
			if a.json {
				a.printJSON(r.Body)
				return nil
			}
			if idx, ok := indexOf(r.Body); ok {
				fmt.Fprintf(a.stdout, "snapshot taken at index %d\n", idx)
			} else {
				fmt.Fprintln(a.stdout, "snapshot taken")
			}
			return nil
		},
	}
}

func transferCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "transfer-leader ID",
		Short: "Hand leadership to peer ID",
		Args:  exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			r, err := c.call(ctx, "POST", c.url("/v1/admin/transfer-leader", url.Values{"to": {args[0]}}), nil)
			if err != nil {
				return fmt.Errorf("transfer-leader %s: %w", args[0], err)
			}
			a.done(r, "leadership transferred to "+args[0])
			return nil
		},
	}
}

// peersCall posts a membership change.
func (a *app) peersCall(cmd *cobra.Command, what string, req any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	c, err := a.client()
	if err != nil {
		return err
	}
	ctx, cancel := a.ctx(cmd)
	defer cancel()
	r, err := c.call(ctx, "POST", c.url("/v1/admin/peers", nil), body)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if a.json {
		a.printJSON(r.Body)
		return nil
	}
	msg := what + ": done"
	if idx, ok := indexOf(r.Body); ok {
		msg += fmt.Sprintf(" (index %d)", idx)
	}
	fmt.Fprintln(a.stdout, msg)
	// Show the configuration if the server sent it.
	var conf struct {
		Peers    []peer `json:"peers"`
		OldPeers []peer `json:"old_peers"`
		Learners []peer `json:"learners"`
	}
	if json.Unmarshal(r.Body, &conf) == nil && conf.Peers != nil {
		fmt.Fprintf(a.stdout, "peers: %s\n", peerList(conf.Peers))
		if len(conf.Learners) > 0 {
			fmt.Fprintf(a.stdout, "learners: %s\n", peerList(conf.Learners))
		}
	}
	return nil
}

func addPeerCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "add-peer ID ADDR",
		Short: "Add voter ID at raft address ADDR (HOST:PORT)",
		Args:  exactArgs("ID", "ADDR"),
		RunE: func(cmd *cobra.Command, args []string) error {
			p := peer{ID: args[0], Addr: args[1]}
			if err := checkPeer(p); err != nil {
				return err
			}
			return a.peersCall(cmd, "add-peer "+p.ID, map[string]any{"add": p})
		},
	}
}

func removePeerCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "remove-peer ID",
		Short: "Remove member ID",
		Args:  exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[0] == "" {
				return usageError{errors.New("the peer id is empty")}
			}
			return a.peersCall(cmd, "remove-peer "+args[0], map[string]any{"remove": args[0]})
		},
	}
}

func changePeersCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "change-peers ID=ADDR,ID=ADDR,...",
		Short: "Replace the voters with the peers listed (joint consensus)",
		Args:  exactArgs("ID=ADDR,..."),
		RunE: func(cmd *cobra.Command, args []string) error {
			peers, err := parsePeers(args[0])
			if err != nil {
				return usageError{err}
			}
			return a.peersCall(cmd, "change-peers", map[string]any{"change": peers})
		},
	}
}

func checkPeer(p peer) error {
	if p.ID == "" || p.Addr == "" {
		return usageError{fmt.Errorf("bad peer %q=%q: want a non-empty ID and HOST:PORT", p.ID, p.Addr)}
	}
	if !strings.Contains(p.Addr, ":") {
		return usageError{fmt.Errorf("bad address %q of peer %s: want HOST:PORT", p.Addr, p.ID)}
	}
	return nil
}

// parsePeers parses ID=HOST:PORT,ID=HOST:PORT,...
func parsePeers(s string) ([]peer, error) {
	var peers []peer
	seen := map[string]bool{}
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		id, addr, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("bad peer %q: want ID=HOST:PORT", part)
		}
		p := peer{ID: strings.TrimSpace(id), Addr: strings.TrimSpace(addr)}
		if err := checkPeer(p); err != nil {
			return nil, err
		}
		if seen[p.ID] {
			return nil, fmt.Errorf("peer %s is listed twice", p.ID)
		}
		seen[p.ID] = true
		peers = append(peers, p)
	}
	if len(peers) == 0 {
		return nil, errors.New("no peers given: want a list ID=HOST:PORT,ID=HOST:PORT")
	}
	return peers, nil
}
