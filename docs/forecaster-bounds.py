#!/usr/bin/env python3
"""The bounds behind BENCHMARKS.md, Forecaster ("What no forecaster of this kind reaches").

Reads the traces the cross-validation reads (crates/alarm/tests/data), scales them by the
contract's rule (docs/contract.md section 4: as is when there is an event at T = 80, else
x * 85 / P97) and prints, per family:

1. where every crossing (event) stood two samples before it (t_c - 10 min, the only sample
   whose AMBER gives a 10-minute lead) and one sample before it: how many were already within
   d points of T, and how many sub-T samples were that close without a crossing following
   within 10 min (the base rate a causal detector faces);
2. the pure level rule "AMBER when y >= T - d" scored by the same protocol (recall, share
   caught at t_c - 10 min, precision, false alarms per day, AMBER %).

    python3 docs/forecaster-bounds.py
"""
import csv
import glob
import os

import numpy as np

T = 80.0
H = 2  # samples in 10 min at 5-minute steps
DATA = os.path.join(os.path.dirname(__file__), "..", "crates", "alarm", "tests", "data")


def events(y):
    return [c for c in range(15, len(y)) if y[c] > T and (y[c - 6:c] <= T).all()]


def load(path):
    y = []
    for row in csv.reader(open(path)):
        try:
            y.append(float(row[1]))
        except (ValueError, IndexError):
            pass  # the header
    y = np.array(y)
    if not events(y):
        y = y * (T + 5) / np.percentile(y, 97)
    return y


def score(y, amber):
    n, ev = len(y), events(y)
    caught = sum(1 for c in ev if amber[c - H:c].any())
    early = sum(1 for c in ev if amber[c - H])
    true = false = 0
    i = 0
    while i < n:
        if not amber[i]:
            i += 1
            continue
        while i + 1 < n and amber[i + 1]:
            i += 1
        if i + H <= n - 1:
            if (y[i + 1:i + H + 1] > T).any():
                true += 1
            else:
                false += 1
        i += 1
    return np.array([len(ev), caught, early, true, false])


def family(name, paths):
    traces = [load(p) for p in paths]
    print(f"== {name} ({len(paths)} traces)")
    for d in [0.5, 1, 2, 3, 5]:
        at2 = at1 = close = followed = 0
        for y in traces:
            for c in events(y):
                at2 += T - y[c - 2] <= d
                at1 += T - y[c - 1] <= d
            for i in range(12, len(y) - H):
                if y[i] <= T and T - y[i] <= d:
                    close += 1
                    followed += (y[i + 1:i + H + 1] > T).any()
        n_ev = sum(len(events(y)) for y in traces)
        print(f"  within {d:>3} of T: {at2:3}/{n_ev} crossings at t_c-10m, {at1:3} at t_c-5m; "
              f"sub-T samples that close: {close}, followed by a crossing within 10 min: "
              f"{followed} ({100 * followed / max(close, 1):.1f} %)")
    far = far_followed = far_events = 0
    for y in traces:
        far_events += sum(1 for c in events(y) if T - y[c - 1] > 5)
        for i in range(12, len(y) - H):
            if T - y[i] > 5:
                far += 1
                far_followed += (y[i + 1:i + H + 1] > T).any()
    print(f"  more than 5 below T at t_c-5m: {far_events} crossings; sub-T samples that far: "
          f"{far}, followed by a crossing within 10 min: {far_followed} "
          f"({100 * far_followed / max(far, 1):.2f} %)")
    for d in [0.25, 0.5, 1, 2, 3]:
        tot, days, amb, elig = np.zeros(5), 0.0, 0, 0
        for y in traces:
            idx = np.arange(len(y))
            amber = (idx >= 12) & (y <= T) & (y >= T - d)
            tot += score(y, amber)
            days += (len(y) - 1 - 12) * 300 / 86400
            amb += amber.sum()
            elig += ((idx >= 12) & (y <= T)).sum()
        e, c, early, tr, fa = tot
        print(f"  level rule y >= T-{d}: recall {c / e:.2f}, caught at t_c-10m {early / max(c, 1):.2f}, "
              f"precision {tr / max(tr + fa, 1):.2f}, {fa / days:.2f} false/day, "
              f"AMBER {100 * amb / elig:.1f} %")


paths = sorted(glob.glob(os.path.join(DATA, "traces*", "*.csv")))
mem = [p for p in paths if "mem" in os.path.basename(p).lower()]
cpu = [p for p in paths if p not in mem and "asg" not in os.path.basename(p).lower()]
family("mem", mem)
family("cpu_no_asg", cpu)
