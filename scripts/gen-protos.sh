#!/usr/bin/env bash
# Generate broker/v1/*_pb2*.py(i) from protos/. With --check, generate into a
# scratch directory and fail if the committed files differ (stale or edited).
set -euo pipefail
cd "$(dirname "$0")/.."
gen() {
  local out=$1
  mkdir -p "$out/broker/v1"
  python -m grpc_tools.protoc -I protos \
    --python_out="$out" --mypy_out="$out" protos/broker/v1/*.proto
  # Only files that declare services get gRPC stubs.
  local svc
  svc=$(grep -l '^service ' protos/broker/v1/*.proto)
  # shellcheck disable=SC2086
  python -m grpc_tools.protoc -I protos \
    --grpc_python_out="$out" --mypy_grpc_out="$out" $svc
}
if [ "${1:-}" = "--check" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  gen "$tmp"
  status=0
  for f in "$tmp"/broker/v1/*_pb2*; do
    name=$(basename "$f")
    if ! cmp -s "$f" "broker/v1/$name"; then
      echo "stale generated code: broker/v1/$name differs from protos/ (run: make protos)" >&2
      status=1
    fi
  done
  for f in broker/v1/*_pb2*; do
    [ -e "$tmp/broker/v1/$(basename "$f")" ] || { echo "unexpected generated file: $f (run: make protos)" >&2; status=1; }
  done
  [ $status -eq 0 ] && echo "generated protobuf code is up to date"
  exit $status
fi
gen "${1:-.}"
