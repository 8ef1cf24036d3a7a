#!/usr/bin/env bash
# make demo-stop: stop the rota-server and simulated devices of make demo.
cd "$(dirname "$0")/../demo" 2>/dev/null || exit 0
for f in fleet.pid server.pid; do
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  kill "$pid" 2>/dev/null && for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$f"
done
