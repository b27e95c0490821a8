// Package grpctransport is graft's production transport: gRPC over HTTP/2,
// one connection per peer process, one server per process.
//
// # Server side
//
// A process builds one Server around its transport.Router and serves it on
// a listener. Every group the process hosts shares it: each request names
// its group and target peer, and the Server routes it through the Router.
//
//	router := transport.NewRouter()
//	router.Register("g1", "n1", node)      // a raft node's transport.Handler
//	router.SetFileHandler(snapshotFiles)   // the process's FileService
//	srv := grpctransport.NewServer(router)
//	go srv.Serve(lis)
//	defer srv.Stop()
//
// A request for a (group, peer) the process does not host fails with
// codes.NotFound; the client turns that into transport.ErrUnknownGroup.
//
// # Client side
//
// New returns a Transport that lazily dials one pooled *grpc.ClientConn per
// address. Unary RPCs without a deadline get Options.RPCTimeout. Errors wrap
// the transport package's sentinels (ErrUnknownGroup, ErrUnreachable,
// ErrClosed) so callers test them with errors.Is, and still carry the gRPC
// status (status.Code works on them) for errors a handler returned.
//
//	tr := grpctransport.New(grpctransport.DefaultOptions())
//	defer tr.Close()
//	resp, err := tr.RequestVote(ctx, "10.0.0.2:7000", req)
//
// # Mutual TLS
//
// A Server and a Transport are plaintext unless given credentials.
// ServerTLS and ClientTLS build them from PEM files: the Server then
// requires every client to present a certificate signed by the CA (raft
// RPCs and GetFile alike, since both services share the Server), and the
// Transport presents its own and accepts only servers the CA signed for
// the host dialled. A peer without such a certificate fails the handshake;
// its calls fail with transport.ErrUnreachable and reach no handler.
//
//	creds, err := grpctransport.ServerTLS("n1.crt", "n1.key", "ca.crt")
//	srv := grpctransport.NewServer(router, creds)
//	dial, err := grpctransport.ClientTLS("n1.crt", "n1.key", "ca.crt")
//	opts := grpctransport.DefaultOptions()
//	opts.DialOptions = append(opts.DialOptions, dial)
//	tr := grpctransport.New(opts)
//
// ServerTLSConfig and ClientTLSConfig return the *tls.Config, for an HTTPS
// API on the same certificates.
//
// # Pipelines
//
// Transport.Pipeline opens a PipelineEntries bidi stream. The server calls
// HandleAppendEntries for each request as it arrives and writes responses
// strictly in request order, whatever order the handler completes them in.
// At most MaxPipelineOutstanding requests per stream are read and not yet
// answered; beyond that the server stops reading and HTTP/2 flow control
// eventually blocks the client's Send. Every request of one stream must
// name the same group and peer. A handler error ends the stream: responses
// to earlier requests are delivered, then Recv returns the error.
package grpctransport
