#!/usr/bin/env python3
"""CPU time by process name while a command runs (a benchmark's helper, not product code).

    python3 docs/bench/cpu-by-process.py -- cargo bench -p procwatch-server --bench http

Reads utime + stime of every process in /proc every 0.5 s while the command runs, then prints,
per process name (`comm`), the CPU seconds each process used between the first and the last
time it was seen. A process that lives less than 0.5 s may be missed; the CPU of a process
before it was first seen (at most 0.5 s of it) is not counted. Used for BENCHMARKS.md,
"ClickHouse cluster", Run 7 (the cluster's servers and ZooKeeper against influxd in one run).
"""
import collections
import os
import subprocess
import sys
import time


def snapshot():
    snap = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                s = f.read()
        except OSError:
            continue
        i = s.rfind(")")
        fields = s[i + 2:].split()
        snap[p] = (s[s.find("(") + 1:i], int(fields[11]) + int(fields[12]))
    return snap


def main():
    args = sys.argv[1:]
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        sys.exit(__doc__)
    hz = os.sysconf("SC_CLK_TCK")
    first, last = {}, {}
    start = time.time()
    child = subprocess.Popen(args)
    while True:
        for p, (comm, ticks) in snapshot().items():
            first.setdefault(p, (comm, ticks))
            last[p] = (comm, ticks)
        if child.poll() is not None:
            break
        time.sleep(0.5)
    by_name = collections.Counter()
    for p, (comm, ticks) in last.items():
        by_name[comm] += ticks - first[p][1]
    print(f"cpu-by-process: {time.time() - start:.1f} s wall, exit {child.returncode}")
    for comm, ticks in by_name.most_common(12):
        print(f"{comm:24s} {ticks / hz:8.2f} s")
    sys.exit(child.returncode)


if __name__ == "__main__":
    main()
