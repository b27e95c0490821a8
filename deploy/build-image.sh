#!/usr/bin/env bash
# Builds graftkv's container image without pulling anything: graftkv and
# graftctl are built here as static binaries (CGO_ENABLED=0; pebble and gRPC
# are pure Go) and deploy/Dockerfile copies them into a FROM scratch image.
#
#   deploy/build-image.sh                              # graftkv:latest
#   deploy/build-image.sh graftkv:v2 --label rel=2     # a tag; further arguments go to docker build
#
# The binaries are built for the Docker daemon's architecture unless GOARCH
# is set; $GO is the go command (default: go).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tag=${1:-graftkv:latest}
[ $# -gt 0 ] && shift
go=${GO:-go}
arch=${GOARCH:-$(docker version --format '{{.Server.Arch}}')}

ctx=$(mktemp -d "${TMPDIR:-/tmp}/graftkv-image.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/tmp" "$ctx/data"
chmod 1777 "$ctx/rootfs/tmp"
chmod 0755 "$ctx/data"

start=$(date +%s)
(cd "$root" && CGO_ENABLED=0 GOOS=linux GOARCH="$arch" "$go" build -trimpath -ldflags='-s -w' \
	-o "$ctx/rootfs/usr/local/bin/" ./cmd/graftkv ./cmd/graftctl)
cp "$root/deploy/Dockerfile" "$ctx/Dockerfile"
docker build --quiet --tag "$tag" "$@" "$ctx" >/dev/null
echo "built $tag ($(docker image inspect --format '{{.Id}}' "$tag"), linux/$arch) in $(($(date +%s) - start))s"
