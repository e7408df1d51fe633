#!/usr/bin/env bash
# Stop the daemons ci/slurm/start.sh started (by their pid files) and keep the logs.
# Usage: ci/slurm/stop.sh [STATE_DIR] [--clean]    (--clean also removes STATE_DIR)
set -uo pipefail
STATE=${1:-/tmp/mcpvs-slurm}
for pidfile in "$STATE/slurmd.pid" "$STATE/slurmctld.pid" "$STATE/munge/munged.pid"; do
    if [ -s "$pidfile" ]; then
        pid=$(cat "$pidfile")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$pidfile"
    fi
done
if [ "${2:-}" = --clean ]; then rm -rf "$STATE"; fi
