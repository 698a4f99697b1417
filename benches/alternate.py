#!/usr/bin/env python3
"""Whole-process timings of several commands taking turns, run by run (A B C, C B A, ...).

hyperfine times one command's runs after another's, so a drift of the machine over the
minutes of a run (another process, the CPU's clock, the page cache) lands on one command more
than on the other; for differences of a few percent that drift is larger than the difference.
Taking turns puts every command under the same drift.

Usage: benches/alternate.py --runs N --json OUT [--warmup W] NAME=COMMAND ...
Writes {"results": [{"command", "median", "mean", "user", "system", "times"}]} (seconds; user
and system the means of the children's rusage), hyperfine's field names, and prints medians.
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import time


def run_once(argv):
    """Wall seconds and the child's (user, system) seconds."""
    began = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - began
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"alternate.py: {shlex.join(argv)} exited with {proc.returncode}")
    return wall, usage.ru_utime, usage.ru_stime


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=60)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--json", required=True)
    p.add_argument("commands", nargs="+", help="NAME=COMMAND")
    a = p.parse_args()
    named = [c.split("=", 1) for c in a.commands]
    argvs = [shlex.split(cmd) for _, cmd in named]
    for _ in range(a.warmup):
        for argv in argvs:
            run_once(argv)
    samples = [[] for _ in named]
    order = list(range(len(named)))
    for i in range(a.runs):
        for k in (order if i % 2 == 0 else order[::-1]):
            samples[k].append(run_once(argvs[k]))
    results = []
    for (name, _), runs in zip(named, samples):
        times = [w for w, _, _ in runs]
        results.append({"command": name, "median": statistics.median(times), "mean": statistics.mean(times),
                        "user": statistics.mean(u for _, u, _ in runs),
                        "system": statistics.mean(s for _, _, s in runs), "times": times})
        print(f"{name:40s} median {statistics.median(times) * 1e3:7.2f} ms")
    with open(a.json, "w") as f:
        json.dump({"results": results}, f)


if __name__ == "__main__":
    main()
