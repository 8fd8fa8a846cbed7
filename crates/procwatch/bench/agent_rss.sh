#!/bin/bash
# RSS of the shipping agent at N processes: tops the host up with idle `sleep` children (to N
# processes in all, default 1000), starts `procwatch server --store memory` on 127.0.0.1:0 and
# `procwatch agent --interval 1s` sending to it (spool in a temp dir), reads VmRSS/VmHWM of the
# agent every 5 s for SECONDS (default 30), prints them with the load, then stops exactly the
# processes it started (by PID).
# COLD=1: the agent runs from its own copy of the binary, evicted from the page cache first
# (posix_fadvise DONTNEED), as on a monitored host where no server shares its code pages:
# only the pages it touches (and their readahead) become resident. Without it the agent and
# the server map the same file, and the kernel maps in (fault-around) every neighbouring
# page the server has already loaded.
# AGENT_BIN=FILE: the agent runs from FILE (e.g. the agent-only build, `cargo build --release
# --no-default-features -p procwatch`), the server from PROCWATCH_BINARY.
# Usage: [COLD=1] [AGENT_BIN=FILE] crates/procwatch/bench/agent_rss.sh [PROCWATCH_BINARY] [N] [SECONDS]
set -u
BIN=${1:-target/release/procwatch}
WANT=${2:-1000}
SECS=${3:-30}
TMP=$(mktemp -d)
PIDS=()
cleanup() {
  if [ ${#PIDS[@]} -gt 0 ]; then kill "${PIDS[@]}" 2>/dev/null; fi
  wait 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
HAVE=$(ls /proc | grep -c '^[0-9]')
for _ in $(seq $((WANT > HAVE ? WANT - HAVE : 0))); do sleep 600 & PIDS+=($!); done
"$BIN" server --listen 127.0.0.1:0 --addr-file "$TMP/addr" --store memory --interval 1s \
  >"$TMP/server.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$TMP/addr" ] && break; sleep 0.1; done
[ -s "$TMP/addr" ] || { echo "the server did not start"; cat "$TMP/server.log"; exit 1; }
ABIN=${AGENT_BIN:-$BIN}
if [ "${COLD:-0}" = 1 ]; then
  ABIN=$TMP/procwatch-agent
  cp "${AGENT_BIN:-$BIN}" "$ABIN"
  sync "$ABIN"
  python3 -c 'import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$ABIN"
fi
"$ABIN" agent --server "http://$(cat "$TMP/addr")" --interval 1s --spool-dir "$TMP/spool" \
  >"$TMP/agent.log" 2>&1 &
A=$!
PIDS+=($A)
echo "binary: $BIN ($(stat -c %s "$BIN") bytes), agent from: $ABIN ($(stat -c %s "$ABIN") bytes)"
echo "processes on the host: $(ls /proc | grep -c '^[0-9]')"
for t in $(seq 5 5 "$SECS"); do
  sleep 5
  kill -0 "$A" 2>/dev/null || { echo "the agent exited"; cat "$TMP/agent.log"; exit 1; }
  echo "t=${t}s $(grep -E 'VmRSS|VmHWM' "/proc/$A/status" | tr -s ' \t' ' ' | tr '\n' ' ')"
done
grep -E '^(Rss|Pss|Shared_Clean|Shared_Dirty|Private_Clean|Private_Dirty|Anonymous):' "/proc/$A/smaps_rollup" 2>/dev/null | tr -s ' ' | tr '\n' ' '; echo
awk '/^[0-9a-f]+-/{name=$6} /^Rss:/{rss[name]+=$2} END{for(n in rss) if(rss[n]>=256) printf "  %s %d kB\n", (n==""?"[anon]":n), rss[n]}' "/proc/$A/smaps" | sort -k2 -n -r
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
