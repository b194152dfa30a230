#!/usr/bin/env bash
# Generates the Python protobuf modules of holdless's API for holdless_router.py.
#   deploy/kamailio/gen-stubs.sh OUT_DIR        (default: deploy/kamailio/gen)
# Needs protoc and the well-known types (Debian: protobuf-compiler, libprotobuf-dev).
# Only message classes are generated: the adapter calls RouteCall by its method path,
# so no grpcio-tools (and no version coupling with grpcio) is needed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
proto="$here/../../proto"
out="${1:-$here/gen}"
mkdir -p "$out"
protoc -I "$proto" -I /usr/include --python_out="$out" "$proto"/holdless/v1/*.proto
echo "generated $(find "$out" -name '*_pb2.py' | wc -l) modules in $out"
