#!/usr/bin/env bash
# Regenerates the Python stubs of every .proto under protos/ into gen/python (the omni-protos package).
# Old output is deleted first so a removed .proto leaves nothing behind.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
# protoc finds the mypy-protobuf plugins on PATH, next to the interpreter.
export PATH="$(dirname "$PY"):$PATH"
OUT=gen/python
rm -rf "$OUT/omni"
mkdir -p "$OUT"
mapfile -t PROTOS < <(find protos -name '*.proto' | LC_ALL=C sort)
"$PY" -m grpc_tools.protoc -Iprotos \
  --python_out="$OUT" --grpc_python_out="$OUT" \
  --mypy_out="$OUT" --mypy_grpc_out="$OUT" \
  "${PROTOS[@]}"
# Packages (not namespace packages) so mypy and setuptools find them; py.typed ships the .pyi types.
find "$OUT/omni" -type d -exec touch {}/__init__.py \;
touch "$OUT/omni/py.typed"
