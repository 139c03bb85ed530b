#!/bin/sh
# Generate Go code from proto/ and build the Go client test's program, in GOPATH
# mode over Debian's Go packages (golang-go, golang-google-grpc-dev,
# golang-goprotobuf-dev, protoc-gen-go-grpc, protobuf-compiler; `make go-client`
# installs them). Module mode cannot work offline: Debian does not ship every
# module grpc-go's go.mod names.
#
#   tests/clients/go/build.sh [MAIN_DIR_OR_FILE OUTPUT]
#
# Without arguments: the client in this folder, into build/scorewire-go-client.
# Everything it writes is under build/: the generated package (build/gopath/src/
# scorewire/v1, import path "scorewire/v1", from the .proto's go_package) and Go's
# build cache. Generated code is not committed, as for the TypeScript client.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
BUILD=$HERE/build
MAIN=${1:-$HERE}
OUT=${2:-$BUILD/scorewire-go-client}
DEBIAN_GOPATH=/usr/share/gocode
case $MAIN in /*) ;; *) MAIN=$PWD/$MAIN ;; esac
case $OUT in /*) ;; *) OUT=$PWD/$OUT ;; esac

for tool in go protoc protoc-gen-go protoc-gen-go-grpc; do
	command -v "$tool" >/dev/null || { echo "build.sh: $tool is not on PATH (make go-client installs it)" >&2; exit 127; }
done
[ -d "$DEBIAN_GOPATH/src/google.golang.org/grpc" ] ||
	{ echo "build.sh: no grpc-go in $DEBIAN_GOPATH (make go-client installs golang-google-grpc-dev)" >&2; exit 127; }

# 1. scorewire.v1: messages (protoc-gen-go) and stubs (protoc-gen-go-grpc); the health
#    client is grpc-go's own google.golang.org/grpc/health/grpc_health_v1
rm -rf "$BUILD/gopath"
mkdir -p "$BUILD/gopath/src"
protoc -I "$ROOT/proto" --go_out="$BUILD/gopath/src" --go-grpc_out="$BUILD/gopath/src" scorewire/v1/scorewire.proto

# 2. the program, offline, against the generated package and Debian's
if [ -d "$MAIN" ]; then cd "$MAIN" && target=.; else cd "$(dirname "$MAIN")" && target=$(basename "$MAIN"); fi
GOPATH="$BUILD/gopath:$DEBIAN_GOPATH" GO111MODULE=off GOPROXY=off GOFLAGS= GOCACHE="$BUILD/cache" \
	go build -o "$OUT" "$target"
