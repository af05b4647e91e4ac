#!/usr/bin/env bash
# Regenerates the Go code for every .proto under api/. Needs protoc; installs
# protoc-gen-go and protoc-gen-go-grpc at versions matching go.mod.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v protoc >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    apt-get -y install protobuf-compiler >/dev/null
  else
    echo "proto.sh: protoc not found; install protobuf-compiler" >&2
    exit 1
  fi
fi

GOBIN="$(go env GOPATH)/bin"
PROTOBUF_VERSION="$(go list -m -f '{{.Version}}' google.golang.org/protobuf)"
GRPC_GEN_VERSION="v1.6.2" # protoc-gen-go-grpc release matching google.golang.org/grpc v1.8x
want_go="protoc-gen-go ${PROTOBUF_VERSION}"
if [[ ! -x "$GOBIN/protoc-gen-go" ]] || [[ "$("$GOBIN/protoc-gen-go" --version 2>/dev/null)" != "$want_go" ]]; then
  GOFLAGS= go install "google.golang.org/protobuf/cmd/protoc-gen-go@${PROTOBUF_VERSION}"
fi
if [[ ! -x "$GOBIN/protoc-gen-go-grpc" ]] || [[ "$("$GOBIN/protoc-gen-go-grpc" --version 2>/dev/null)" != "protoc-gen-go-grpc ${GRPC_GEN_VERSION#v}" ]]; then
  (cd /tmp && GOFLAGS= go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@${GRPC_GEN_VERSION}")
fi

export PATH="$GOBIN:$PATH"
mapfile -t protos < <(find api -name '*.proto' | sort)
for p in "${protos[@]}"; do
  protoc -I . \
    --go_out=. --go_opt=paths=source_relative \
    --go-grpc_out=. --go-grpc_opt=paths=source_relative \
    "$p"
  echo "generated from $p"
done
