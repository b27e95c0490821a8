package kv_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"time"

	"github.com/graft-raft/graft"
	"github.com/graft-raft/graft/kv"
	"github.com/graft-raft/graft/snapshot"
	"github.com/graft-raft/graft/transport"
	"github.com/graft-raft/graft/transport/memory"
)

// A one-node graftkv cluster, served over HTTP. A real process wires the
// gRPC transport instead of the in-memory network (see cmd/graftkv).
func ExampleServer() {
	dir, err := os.MkdirTemp("", "graftkv-example-")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	network := memory.NewNetwork(1)
	defer network.Close()

	// One router, transport and file service per process.
	router := transport.NewRouter()
	files := snapshot.NewFileService(snapshot.FileServiceOptions{})
	defer files.Close()
	router.SetFileHandler(files)
	if _, err := network.Listen("raft-n1", router); err != nil {
		fmt.Println(err)
		return
	}
	trans := network.Transport("raft-n1")
	defer trans.Close()

	cfg := kv.DefaultConfig()
	cfg.ID, cfg.HTTPAddr, cfg.DataDir = "n1", "127.0.0.1:8001", dir
	cfg.Peers = []graft.Peer{{ID: "n1", Addr: "raft-n1"}}
	cfg.Transport, cfg.Router, cfg.FileService = trans, router, files
	cfg.ElectionTimeout = 100 * time.Millisecond // a quick first election
	srv, err := kv.NewServer(cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()
	for !srv.Node().IsLeader() {
		time.Sleep(10 * time.Millisecond)
	}

	call := func(method, path, body string) {
		w := httptest.NewRecorder()
		srv.Handler().ServeHTTP(w, httptest.NewRequest(method, path, strings.NewReader(body)))
		out := w.Body.String()
		if strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") {
			out = "json" // an index or an error
		}
		fmt.Println(method, path, w.Code, out)
	}
	call(http.MethodPut, "/v1/kv/greeting", "hello")
	call(http.MethodGet, "/v1/kv/greeting", "")
	call(http.MethodPut, "/v1/kv/greeting?prev=bye", "hi")
	call(http.MethodDelete, "/v1/kv/greeting", "")
	call(http.MethodGet, "/v1/kv/greeting", "")
	// Output:
	// PUT /v1/kv/greeting 200 json
	// GET /v1/kv/greeting 200 hello
	// PUT /v1/kv/greeting?prev=bye 412 json
	// DELETE /v1/kv/greeting 200 json
	// GET /v1/kv/greeting 404 json
}
