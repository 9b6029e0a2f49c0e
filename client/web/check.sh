#!/usr/bin/env bash
# Fails if the committed bundle (dist/) or generated code (src/gen/) is not
# what the sources build to: rebuilds everything in a temporary copy with
# `npm run build` (npm ci + codegen + bundle), compares, and runs the SDK's
# unit tests there. Needs node, npm, protoc and the npm registry.
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/stream" "$tmp/client/web"
cp ../../stream/quicpush.proto "$tmp/stream/"
tar --exclude=./node_modules --exclude=./dist --exclude=./src/gen -cf - . | tar -xf - -C "$tmp/client/web"
npm --prefix "$tmp/client/web" run build --silent
status=0
diff -rq src/gen "$tmp/client/web/src/gen" || status=1
diff -rq dist "$tmp/client/web/dist" || status=1
if [ "$status" != 0 ]; then
  echo "client/web: the committed bundle differs from its sources: run 'npm --prefix client/web run build' and commit dist/ and src/gen/ (stream/quicpush.proto changed?)" >&2
  exit 1
fi
npm --prefix "$tmp/client/web" test --silent
echo "client/web: dist/ and src/gen/ match their sources"
