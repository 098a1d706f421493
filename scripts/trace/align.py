#!/usr/bin/env python3
"""Lines kernel traces up with the benchmark's Enters (BENCH_TRACE=1 stderr).

  align.py path BENCH_STDERR EVENTS   enter_path.bt's events, as quantiles of ms
                                      after each second's first Enter
  align.py busy BENCH_STDERR BUSY     cpu_by_group.bt's CPU per group, % of the
                                      machine, in 10 ms steps around the Enter
  align.py off  BENCH_STDERR OFF      off_cpu.bt's sleeps, summed by stack, in the
                                      Enter's window (-5..60 ms) and elsewhere
"""
import bisect
import collections
import os
import re
import sys


def burst_starts(stderr):
    """The first Enter of each second (CLOCK_MONOTONIC ns), and every Enter with
    its answer time (ns)."""
    sent = []
    for line in open(stderr):
        parts = line.split()
        if len(parts) >= 5 and parts[0] == "TRACE":
            sent.append((int(parts[4]), float(parts[3]) * 1e6))
    starts = []
    for t, _ in sorted(sent):
        if not starts or t - starts[-1] > 0.5e9:
            starts.append(t)
    return starts, sent


def phase_ms(starts, t):
    """ms from the Enter burst of t's second (negative: the typing before it)."""
    i = bisect.bisect_right(starts, t + 250e6) - 1
    return None if i < 0 else (t - starts[i]) / 1e6


def quantile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def path(stderr, events):
    starts, sent = burst_starts(stderr)
    seen = collections.defaultdict(list)
    for line in open(events):
        parts = line.split()
        if len(parts) == 3 and parts[0] in ("I", "R", "W", "S"):
            seen[parts[0]].append(int(parts[2]))
    if not seen["R"]:
        sys.exit("no events")
    lo, hi = min(seen["R"]), max(seen["R"])
    rows = collections.defaultdict(list)
    for t, answer in sent:
        if lo - 50e6 <= t <= hi + 50e6:
            ph = phase_ms(starts, t)
            rows["Enter sent"].append(ph)
            rows["answer read"].append(ph + answer / 1e6)
    for kind, name in (("I", "server wrote CR"), ("R", "bash read CR"), ("W", "bash wrote"), ("S", "server read")):
        for t in seen[kind]:
            ph = phase_ms(starts, t)
            if ph is not None and -5 <= ph < 500:
                rows[name].append(ph)
    for name in ("Enter sent", "server wrote CR", "bash read CR", "bash wrote", "server read", "answer read"):
        v = rows[name]
        if v:
            print(f"{name:15s} n={len(v):5d}  p10 {quantile(v, .1):7.2f}  p50 {quantile(v, .5):7.2f}"
                  f"  p90 {quantile(v, .9):7.2f}  ms after the first Enter")


def busy(stderr, trace):
    starts, _ = burst_starts(stderr)
    ms = collections.defaultdict(float)
    for line in open(trace):
        m = re.match(r"@busy\[(\w), (\d+)\]: (\d+)", line)
        if m:
            ms[(m.group(1), int(m.group(2)))] += int(m.group(3)) / 1e6
    times = [k[1] for k in ms]
    lo, hi = min(times), max(times)
    starts = [s for s in starts if lo * 1e6 + 300e6 < s < hi * 1e6 - 100e6]
    cpus = os.cpu_count() or 1
    groups = "HCBSDKOI"
    print(f"{len(starts)} seconds; % of {cpus} CPUs\n   ms " + " ".join(f"{g:>5s}" for g in groups))
    for off in range(-240, 80, 10):
        row = []
        for g in groups:
            total = sum(ms.get((g, int(s / 1e6) + off + i), 0) for s in starts for i in range(10))
            row.append(total / len(starts) / 10 * 100 / cpus)
        print(f"{off:5d} " + " ".join(f"{x:5.0f}" for x in row))


def off(stderr, trace):
    starts, _ = burst_starts(stderr)
    text = open(trace).read()
    sums = collections.defaultdict(collections.Counter)
    for start, length, stack in re.findall(r"OFF (\d+) (\d+) \n(.*?)\n\n", text, re.S):
        frames = [f.strip().split("+")[0] for f in stack.strip().split("\n")]
        if any("futex" in f or "epoll" in f for f in frames):
            continue  # idle: parked workers, the blocking pool
        ph = phase_ms(starts, int(start))
        if ph is None:
            continue
        window = "Enter (-5..60 ms)" if -5 <= ph < 60 else "elsewhere"
        sums[window][" < ".join(frames[2:6])] += int(length) / 1e6
    for window, stacks in sums.items():
        print(window)
        for stack, total in stacks.most_common(8):
            print(f"  {total:8.1f} ms  {stack}")


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("path", "busy", "off"):
        sys.exit(__doc__)
    {"path": path, "busy": busy, "off": off}[sys.argv[1]](sys.argv[2], sys.argv[3])
