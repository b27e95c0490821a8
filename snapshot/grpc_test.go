package snapshot

import (
	"context"
	"errors"
	"net"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/transport"
	grpctransport "github.com/graft-raft/graft/transport/grpc"
	"github.com/graft-raft/graft/vfs"
)

// TestCopyOverGRPC runs a Copy and the FileService's errors across the
// real gRPC transport: codes, not Go sentinels, cross it.
func TestCopyOverGRPC(t *testing.T) {
	leader := openStore(t, vfs.NewMem(), "/leader")
	fs := files{"a": pattern(1, 300_000), "b/c": pattern(2, 1000), "empty": nil}
	writeSnapshot(t, leader, 20, 2, fs)
	files := newFileService(t, FileServiceOptions{})
	router := transport.NewRouter()
	router.SetFileHandler(files)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpctransport.NewServer(router)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		<-served
	})
	tr := grpctransport.New(grpctransport.DefaultOptions())
	t.Cleanup(func() { _ = tr.Close() })
	addr := lis.Addr().String()

	r, _ := leader.Open()
	uri, id := files.Register(r, addr)
	ctx := context.Background()

	_, err = tr.GetFile(ctx, addr, &raftpb.GetFileRequest{ReaderId: id, Filename: "../../etc/passwd", Count: 10})
	wantCode(t, "unlisted over gRPC", err, codes.PermissionDenied, nil)
	_, err = tr.GetFile(ctx, addr, &raftpb.GetFileRequest{ReaderId: id + 1, Filename: "a", Count: 10})
	wantCode(t, "unknown reader over gRPC", err, codes.NotFound, nil)
	_, err = tr.GetFile(ctx, addr, &raftpb.GetFileRequest{ReaderId: id, Filename: "a", Offset: -1, Count: 10})
	wantCode(t, "bad offset over gRPC", err, codes.InvalidArgument, nil)

	follower := openStore(t, vfs.NewMem(), "/follower")
	opts := CopyOptions{Transport: tr, ChunkSize: 64 << 10, Logger: testLogger(t)}
	got, err := Copy(ctx, follower, uri, testMeta(20, 2), opts)
	if err != nil {
		t.Fatal(err)
	}
	checkReader(t, got, 20, fs)
	_ = got.Close()

	// A reader gone is permanent: Copy gives up at once.
	files.Unregister(id)
	other := openStore(t, vfs.NewMem(), "/other")
	var calls int
	opts.Transport = &hookTransport{Transport: tr, before: func(context.Context, *raftpb.GetFileRequest) error {
		calls++
		return nil
	}}
	if _, err := Copy(ctx, other, uri, testMeta(20, 2), opts); err == nil || errors.Is(err, ErrInterrupted) {
		t.Fatalf("Copy of an unregistered reader = %v", err)
	}
	if calls != 1 {
		t.Fatalf("%d calls for a permanent error, want 1", calls)
	}
}
