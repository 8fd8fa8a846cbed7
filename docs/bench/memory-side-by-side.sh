#!/bin/bash
# Two procwatch servers side by side on one warped clock, each fed by its own loadgen (BENCHMARKS.md,
# "Memory per active series"). usage: memory-side-by-side.sh OUT SPEED DURATION AGENTS BASE_BIN NEW_BIN
# e.g. memory-side-by-side.sh /tmp/s7/pair 5 40m 100 /tmp/procwatch-base target/release/procwatch
OUT=$1; SPEED=${2:-5}; DUR=${3:-40m}; AGENTS=${4:-100}; BIN_base=$5; BIN_new=$6
rm -rf "$OUT"; mkdir -p "$OUT"
ORIGIN=$(date +%s%3N); export PROCWATCH_TIME_WARP="$SPEED@$ORIGIN"
unset PROCWATCH_CONFIG
for v in base new; do
  mkdir -p $OUT/$v
  bin=BIN_$v; ${!bin} server --listen 127.0.0.1:0 --addr-file $OUT/$v/addr --data-dir $OUT/$v/data --ingest-rate 0 > $OUT/$v/server.log 2>&1 &
  echo $! > $OUT/$v/server.pid
done
for v in base new; do while [ ! -s $OUT/$v/addr ]; do sleep 0.2; done; done
for v in base new; do
  $BIN_new loadgen --server http://$(cat $OUT/$v/addr) --agents $AGENTS --processes 300 --interval 10s --duration $DUR \
     --server-pid $(cat $OUT/$v/server.pid) --rss-every 15s --time-warp "$SPEED@$ORIGIN" > $OUT/$v/loadgen.log 2>&1 &
  echo $! > $OUT/$v/loadgen.pid
done
T0=$(date +%s)
while kill -0 $(cat $OUT/base/loadgen.pid) 2>/dev/null || kill -0 $(cat $OUT/new/loadgen.pid) 2>/dev/null; do
  for v in base new; do
    pid=$(cat $OUT/$v/server.pid)
    rss=$(awk '/VmRSS/{print $2}' /proc/$pid/status 2>/dev/null)
    m=$(curl -s -m 5 http://$(cat $OUT/$v/addr)/metrics)
    w=$(echo "$m" | awk '/^procwatch_store_window_bytes /{print $2}')
    e=$(echo "$m" | awk '/^procwatch_alarm_engine_bytes /{print $2}')
    echo "$(( $(date +%s) - T0 )) rss_kb=$rss window=$w engine=$e load=$(cut -d' ' -f1 /proc/loadavg)" >> $OUT/$v/samples.txt
  done
  sleep 15
done
for v in base new; do
  pid=$(cat $OUT/$v/server.pid)
  awk '/VmRSS|VmHWM/' /proc/$pid/status > $OUT/$v/final_status.txt
  curl -s http://$(cat $OUT/$v/addr)/metrics > $OUT/$v/metrics_end.txt
  kill $pid
done
echo done $(date -u)
