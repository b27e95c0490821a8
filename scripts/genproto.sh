#!/usr/bin/env bash
# Regenerates raftpb/*.pb.go from raftpb/*.proto with pinned tool versions.
# Usage: scripts/genproto.sh          regenerate in place
#        scripts/genproto.sh --check  fail if the committed code is stale
set -euo pipefail
cd "$(dirname "$0")/.."

PROTOC_WANT="libprotoc 3.21.12"
PROTOC_GEN_GO=v1.36.12
PROTOC_GEN_GO_GRPC=v1.6.2

if ! command -v protoc >/dev/null 2>&1; then
  echo "genproto: installing protoc (Debian protobuf-compiler)" >&2
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq protobuf-compiler >/dev/null
  else
    echo "genproto: protoc missing; install Debian's protobuf-compiler" >&2; exit 1
  fi
fi
have=$(protoc --version)
if [ "$have" != "$PROTOC_WANT" ]; then
  echo "genproto: want $PROTOC_WANT, have $have" >&2; exit 1
fi

bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
GOBIN="$bin" go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO"
GOBIN="$bin" go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC"

out=.
if [ "${1:-}" = "--check" ]; then
  out=$(mktemp -d)
  trap 'rm -rf "$bin" "$out"' EXIT
fi
# The files are registered with protobuf under graft/raftpb/*.proto, not a
# bare raft.proto: protobuf-go refuses two files of one name in a binary,
# and etcd's raft (among others) registers "raft.proto".
PATH="$bin:$PATH" protoc --proto_path=graft/raftpb=raftpb \
  --go_out="$out" --go_opt=module=github.com/graft-raft/graft \
  --go-grpc_out="$out" --go-grpc_opt=module=github.com/graft-raft/graft \
  graft/raftpb/raft.proto graft/raftpb/file_service.proto graft/raftpb/snapshot.proto

if [ "${1:-}" = "--check" ]; then
  for f in "$out"/raftpb/*.go; do
    if ! cmp -s "$f" "raftpb/$(basename "$f")"; then
      echo "genproto: raftpb/$(basename "$f") is stale; run scripts/genproto.sh" >&2; exit 1
    fi
  done
  echo "genproto: generated code is up to date"
fi
