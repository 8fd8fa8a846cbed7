#!/bin/bash
# One procwatch server on a warped clock fed by one loadgen; samples RSS and gauges every 15 s.
# usage: [BUSY=share] memory-at-scale.sh OUT SPEED DURATION AGENTS BIN
# BUSY: loadgen --busy, the share of processes kept above the alarm engine's dormancy ceilings.
# MEMORY_WINDOW: the server's --memory-window (default: its --window, 5m).
# e.g. memory-at-scale.sh /tmp/s8/new300k 2 16m 1000 target/release/procwatch  (BENCHMARKS.md, "Session 8")
OUT=$1; SPEED=${2:-2}; DUR=${3:-16m}; AGENTS=${4:-1000}; BIN=$5
rm -rf "$OUT"; mkdir -p "$OUT"
ORIGIN=$(date +%s%3N); export PROCWATCH_TIME_WARP="$SPEED@$ORIGIN"
unset PROCWATCH_CONFIG
$BIN server --listen 127.0.0.1:0 --addr-file $OUT/addr --data-dir $OUT/data --ingest-rate 0 ${MEMORY_WINDOW:+--memory-window $MEMORY_WINDOW} > $OUT/server.log 2>&1 &
echo $! > $OUT/server.pid
while [ ! -s $OUT/addr ]; do sleep 0.2; done
$BIN loadgen --server http://$(cat $OUT/addr) --agents $AGENTS --processes 300 --interval 10s --duration $DUR --busy ${BUSY:-0} \
   --server-pid $(cat $OUT/server.pid) --rss-every 15s --time-warp "$SPEED@$ORIGIN" > $OUT/loadgen.log 2>&1 &
echo $! > $OUT/loadgen.pid
T0=$(date +%s); pid=$(cat $OUT/server.pid)
while kill -0 $(cat $OUT/loadgen.pid) 2>/dev/null; do
  rss=$(awk '/VmRSS/{print $2}' /proc/$pid/status 2>/dev/null)
  m=$(curl -s -m 5 http://$(cat $OUT/addr)/metrics)
  w=$(echo "$m" | awk '/^procwatch_store_window_bytes /{print $2}')
  e=$(echo "$m" | awk '/^procwatch_alarm_engine_bytes /{print $2}')
  hu=$(echo "$m" | awk '/^procwatch_heap_in_use_bytes /{print $2}'); hf=$(echo "$m" | awk '/^procwatch_heap_free_bytes /{print $2}')
  d=$(echo "$m" | awk '/^procwatch_alarm_dormant_series /{print $2}')
  mt=$(echo "$m" | awk '/^procwatch_store_maintenance_seconds /{print $2}')
  echo "$(( $(date +%s) - T0 )) rss_kb=$rss window=$w engine=$e dormant=$d heap_in_use=$hu heap_free=$hf maint_s=$mt load=$(cut -d' ' -f1 /proc/loadavg)" >> $OUT/samples.txt
  sleep 15
done
awk '/VmRSS|VmHWM/' /proc/$pid/status > $OUT/final_status.txt
curl -s http://$(cat $OUT/addr)/metrics > $OUT/metrics_end.txt
kill $pid
echo done $(date -u)
