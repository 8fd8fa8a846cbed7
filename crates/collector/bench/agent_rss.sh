#!/bin/bash
# RSS of the long-running agent: tops the host up with `sleep` processes (N, default 900),
# runs `procwatch agent --interval 1s` for 20 s, prints VmRSS/VmHWM, then kills exactly the
# processes it started (by PID).
# Usage: crates/collector/bench/agent_rss.sh [PROCWATCH_BINARY] [N]
set -u
BIN=${1:-target/release/procwatch}
SLEEPERS=()
for _ in $(seq "${2:-900}"); do sleep 600 & SLEEPERS+=($!); done
sleep 1
echo "processes: $(ls /proc | grep -c '^[0-9]')"
OUT=$(mktemp)
"$BIN" agent --interval 1s --format json > "$OUT" &
A=$!
sleep 20
grep -E "VmRSS|VmHWM" "/proc/$A/status"
echo "batches: $(wc -l < "$OUT"), open fds: $(ls "/proc/$A/fd" | wc -l)"
kill "$A"
if [ ${#SLEEPERS[@]} -gt 0 ]; then kill "${SLEEPERS[@]}"; fi
wait 2>/dev/null
rm -f "$OUT"
