// Command graftkv is graft's replicated key-value server.
//
//	go run ./cmd/graftkv demo     # a 3-node cluster in one process, data in ./graftkv-demo/
//	graftkv serve --id n1 --raft-addr 10.0.0.1:7000 --http-addr 10.0.0.1:8000 \
//	    --data-dir /var/lib/graftkv --peers n1=10.0.0.1:7000,n2=10.0.0.2:7000,n3=10.0.0.3:7000
//	graftkv gen-certs --out certs --hosts 10.0.0.1,10.0.0.2,10.0.0.3   # test certificates for mutual TLS
//
// The HTTP API is described in package kv.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	root := &cobra.Command{
		Use:           "graftkv",
		Short:         "graftkv is a replicated key-value store on graft and pebble",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(serveCommand(), demoCommand(), genCertsCommand())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "graftkv:", err)
		os.Exit(1)
	}
}
