#!/usr/bin/env python3
"""Benchmark item 9: the guests from real toolchains (tests/guests) under `wasmlet run` beside
the wasmtime CLI, in the same run.

- wasi:http components (Python, JavaScript): the first response after the server starts, with
  an empty compile cache (cold) and a filled one (warm); for wasmlet cold, also when Cranelift's
  optimised code reached the cache (wasmlet starts a never-seen big component on baseline code).
  Peer: `wasmtime serve -S cli` (cold: `-C cache=n`; warm: its own cache).
- commands (Go wasip1, Python): the first line of output, cold and warm, `wasmlet run` vs
  `wasmtime run`.
- wasi:http requests/s and p50/p99 under wrk (-t2 -c16), warm, both servers.

Every process is bounded in time and stopped at the end. Prints a table; writes JSON lines
(collect.py's record format) to --results.

Usage: benches/guests.py --wasmlet BIN --wasmtime BIN --guests DIR --work DIR --results FILE
       [--rounds N] [--http-seconds S]
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import collect  # noqa: E402  (record(): the results' one format)

START_WITHIN = 600.0  # a cold start of a big component on a busy 2-core machine, bounded


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


class Server:
    """A server process started now; `first` is how long until its first 200."""

    def __init__(self, argv, url, log, env=None):
        self.began = time.monotonic()
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        self.url = url

    def first_response(self, on_wait=None):
        while time.monotonic() - self.began < START_WITHIN:
            if answers(self.url):
                return time.monotonic() - self.began
            if self.proc.poll() is not None:
                raise SystemExit(f"benches/guests: the server exited ({self.proc.returncode}) before answering")
            if on_wait:
                on_wait()
            time.sleep(0.01)
        raise SystemExit(f"benches/guests: no answer from {self.url} within {START_WITHIN} s")

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def cached_files(d):
    return [f for f in os.listdir(d) if f.endswith(".cwasm")] if os.path.isdir(d) else []


def wasmlet_server(a, wasm, cache, port, log):
    env = dict(os.environ, WASMLET_CACHE_DIR=cache, RUST_BACKTRACE="0")
    return Server([a.wasmlet, "run", "--listen", f"127.0.0.1:{port}", wasm],
                  f"http://127.0.0.1:{port}/", log, env)


def wasmtime_server(a, wasm, cache_config, port, log):
    cache = ["-C", "cache=n"] if cache_config is None else ["-C", "cache=y", "-C", f"cache-config={cache_config}"]
    return Server([a.wasmtime, "serve", "-S", "cli", *cache, "--addr", f"127.0.0.1:{port}", wasm],
                  f"http://127.0.0.1:{port}/", log, dict(os.environ, RUST_BACKTRACE="0"))


def cache_config(work, name):
    d = os.path.join(work, f"wasmtime-cache-{name}")
    path = d + ".toml"
    with open(path, "w") as f:
        f.write(f'[cache]\ndirectory = "{d}"\n')
    return path, d


def http_start(a, name, wasm, log):
    """Cold then warm first responses of both servers; rounds alternate."""
    out = {"wasmlet_cold": [], "wasmlet_optimized": [], "wasmlet_warm": [], "wasmtime_cold": [], "wasmtime_warm": []}
    for _ in range(a.rounds):
        cache = os.path.join(a.work, f"cache-{name}")
        shutil.rmtree(cache, ignore_errors=True)
        port = free_port()
        s = wasmlet_server(a, wasm, cache, port, log)
        out["wasmlet_cold"].append(s.first_response())
        while not cached_files(cache) and time.monotonic() - s.began < START_WITHIN:
            time.sleep(0.05)
        out["wasmlet_optimized"].append(time.monotonic() - s.began)
        s.stop()
        s = wasmlet_server(a, wasm, cache, free_port(), log)
        out["wasmlet_warm"].append(s.first_response())
        s.stop()
        s = wasmtime_server(a, wasm, None, free_port(), log)
        out["wasmtime_cold"].append(s.first_response())
        s.stop()
        config, d = cache_config(a.work, name)
        shutil.rmtree(d, ignore_errors=True)
        s = wasmtime_server(a, wasm, config, free_port(), log)
        s.first_response()
        s.stop()
        s = wasmtime_server(a, wasm, config, free_port(), log)
        out["wasmtime_warm"].append(s.first_response())
        s.stop()
    return out


def wrk(url, seconds):
    """requests/s, p50 and p99 (ms) of one wrk run; a run with any answer that is not a 2xx or
    3xx, or with socket errors, ends the benchmark: failures are not throughput."""
    text = subprocess.run(["wrk", "-t2", "-c16", f"-d{seconds}s", "--latency", url],
                          capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sockets = re.search(r"Socket errors: (.*)", text)
    if failed or sockets:
        raise SystemExit(f"benches/guests: {url} failed requests under load "
                         f"({failed.group(1) + ' non-2xx answers' if failed else ''}"
                         f"{'; socket errors ' + sockets.group(1) if sockets else ''}); "
                         f"its server log is in guests-servers.log:\n{text}")
    lat = {}
    for pct in ("50%", "99%"):
        m = re.search(rf"^\s+{pct}\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        lat[pct] = float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
    return rps, lat["50%"], lat["99%"]


def http_load(a, name, wasm, log):
    cache = os.path.join(a.work, f"cache-{name}")
    config, _ = cache_config(a.work, name)
    servers = [("wasmlet", wasmlet_server(a, wasm, cache, free_port(), log)),
               ("wasmtime", wasmtime_server(a, wasm, config, free_port(), log))]
    try:
        for _, s in servers:
            s.first_response()
            wrk(s.url, 2)
        runs = {who: [] for who, _ in servers}
        for _ in range(a.rounds):
            for who, s in servers:
                runs[who].append(wrk(s.url, a.http_seconds))
        return runs
    finally:
        for _, s in servers:
            s.stop()


def first_line(argv, env):
    began = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    line = p.stdout.readline()
    took = time.monotonic() - began
    try:
        p.wait(START_WITHIN)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    if not line:
        raise SystemExit(f"benches/guests: {argv} printed nothing")
    return took


def command_start(a, name, wasm):
    out = {"wasmlet_cold": [], "wasmlet_warm": [], "wasmtime_cold": [], "wasmtime_warm": []}
    for _ in range(a.rounds):
        cache = os.path.join(a.work, f"cache-{name}")
        shutil.rmtree(cache, ignore_errors=True)
        env = dict(os.environ, WASMLET_CACHE_DIR=cache, RUST_BACKTRACE="0")
        out["wasmlet_cold"].append(first_line([a.wasmlet, "run", wasm, "--", "hello"], env))
        out["wasmlet_warm"].append(first_line([a.wasmlet, "run", wasm, "--", "hello"], env))
        out["wasmtime_cold"].append(first_line([a.wasmtime, "run", "-C", "cache=n", wasm, "hello"], os.environ))
        config, d = cache_config(a.work, name)
        shutil.rmtree(d, ignore_errors=True)
        first_line([a.wasmtime, "run", "-C", "cache=y", "-C", f"cache-config={config}", wasm, "hello"], os.environ)
        out["wasmtime_warm"].append(
            first_line([a.wasmtime, "run", "-C", "cache=y", "-C", f"cache-config={config}", wasm, "hello"], os.environ))
    return out


def med(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def main():
    p = argparse.ArgumentParser()
    for flag in ("--wasmlet", "--wasmtime", "--guests", "--work", "--results"):
        p.add_argument(flag, required=True)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--http-seconds", type=int, default=10)
    a = p.parse_args()
    os.makedirs(a.work, exist_ok=True)
    log = open(os.path.join(a.work, "guests-servers.log"), "ab")
    guest = lambda f: os.path.join(a.guests, f)  # noqa: E731
    for f in ("py-http.wasm", "js-http.wasm", "go-cli.wasm", "py-cli.wasm"):
        if not os.path.isfile(guest(f)):
            raise SystemExit(f"benches/guests: {guest(f)} is missing: run `bash tests/guests/build` first")
    peer_http = "wasmtime serve -S cli (wasmtime CLI, same component)"
    for name, f, lang in (("py-http", "py-http.wasm", "Python"), ("js-http", "js-http.wasm", "JavaScript")):
        size = os.path.getsize(guest(f)) / 2**20
        t = http_start(a, name, guest(f), log)
        print(f"{name} ({size:.1f} MiB): first response cold wasmlet {med(t['wasmlet_cold']):.2f} s "
              f"(optimised code cached at {med(t['wasmlet_optimized']):.1f} s), wasmtime {med(t['wasmtime_cold']):.2f} s; "
              f"warm wasmlet {med(t['wasmlet_warm']):.2f} s, wasmtime {med(t['wasmtime_warm']):.2f} s")
        for kind in ("cold", "warm"):
            note = f"{a.rounds} rounds, median; each {kind} round: wasmlet {['%.2f' % x for x in t['wasmlet_' + kind]]} s, wasmtime {['%.2f' % x for x in t['wasmtime_' + kind]]} s"
            if kind == "cold":
                note += (f"; wasmlet starts on baseline (Winch) code and Cranelift's reached the compile cache after "
                         f"{['%.1f' % x for x in t['wasmlet_optimized']]} s")
            collect.record(a.results, item="9", id=f"9.{name}-first-{kind}",
                           name=f"{lang} wasi:http component ({size:.0f} MiB, componentize), first response, {kind} compile cache",
                           metric="time from start to the first 200", value=round(med(t["wasmlet_" + kind]), 3), unit="s",
                           better="lower", command=f"benches/run --items 9 (wasmlet run --listen ADDR {f})",
                           peer={"name": peer_http, "value": round(med(t["wasmtime_" + kind]), 3),
                                 "command": f"wasmtime serve -S cli {'-C cache=n' if kind == 'cold' else '-C cache=y'} {f}"},
                           note=note)
        runs = http_load(a, name, guest(f), log)
        w, m = runs["wasmlet"], runs["wasmtime"]
        print(f"{name}: wasmlet {med([r[0] for r in w]):.0f} req/s p50 {med([r[1] for r in w]):.2f} ms p99 {med([r[2] for r in w]):.2f} ms; "
              f"wasmtime {med([r[0] for r in m]):.0f} req/s p50 {med([r[1] for r in m]):.2f} ms p99 {med([r[2] for r in m]):.2f} ms")
        for idx, (metric, unit, better) in enumerate((("requests/s", "req/s", "higher"), ("p50 latency", "ms", "lower"),
                                                      ("p99 latency", "ms", "lower"))):
            collect.record(a.results, item="9", id=f"9.{name}-{unit.replace('/', '')}-{idx}",
                           name=f"{lang} wasi:http component, warm, wrk -t2 -c16 -d{a.http_seconds}s",
                           metric=metric, value=round(med([r[idx] for r in w]), 2), unit=unit, better=better,
                           command=f"benches/run --items 9 (wasmlet run --listen ADDR {f} & wrk)",
                           peer={"name": peer_http, "value": round(med([r[idx] for r in m]), 2),
                                 "command": f"wasmtime serve -S cli {f} & wrk"},
                           note=f"median of {a.rounds} rounds alternating; rounds wasmlet {[round(r[idx], 2) for r in w]}, "
                                f"wasmtime {[round(r[idx], 2) for r in m]}")
    for name, f, lang in (("go-cli", "go-cli.wasm", "Go wasip1"), ("py-cli", "py-cli.wasm", "Python")):
        size = os.path.getsize(guest(f)) / 2**20
        t = command_start(a, name, guest(f))
        print(f"{name} ({size:.1f} MiB): first output cold wasmlet {med(t['wasmlet_cold']):.2f} s, wasmtime {med(t['wasmtime_cold']):.2f} s; "
              f"warm wasmlet {med(t['wasmlet_warm']):.3f} s, wasmtime {med(t['wasmtime_warm']):.3f} s")
        for kind in ("cold", "warm"):
            collect.record(a.results, item="9", id=f"9.{name}-first-{kind}",
                           name=f"{lang} command ({size:.1f} MiB), first line of output, {kind} compile cache",
                           metric="time from start to the first line", value=round(med(t["wasmlet_" + kind]), 3), unit="s",
                           better="lower", command=f"benches/run --items 9 (wasmlet run {f} -- hello)",
                           peer={"name": "wasmtime run (wasmtime CLI, same program)", "value": round(med(t["wasmtime_" + kind]), 3),
                                 "command": f"wasmtime run {'-C cache=n' if kind == 'cold' else '-C cache=y'} {f} hello"},
                           note=f"{a.rounds} rounds, median; wasmlet {['%.3f' % x for x in t['wasmlet_' + kind]]} s, "
                                f"wasmtime {['%.3f' % x for x in t['wasmtime_' + kind]]} s")


if __name__ == "__main__":
    main()
