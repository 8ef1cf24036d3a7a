#!/usr/bin/env bash
# make bench: the device API's update check against a bare net/http
# handler in the same run, with 10,000 and 100,000 registered devices on
# SQLite and on PostgreSQL (a real server started by the benchmark).
# Results go to docs/benchmarks.md by hand; see the section "Polling".
set -euo pipefail
cd "$(dirname "$0")/.."
ROTA_BENCH_POSTGRES=1 go test -run '^$' -bench Poll -benchtime 40000x -count 3 -timeout 60m \
  ./internal/benchtool/pollbench
