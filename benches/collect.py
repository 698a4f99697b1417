#!/usr/bin/env python3
"""Turns the raw output of each benchmark item into result records, and the records into the
suite's JSON and table. Used by benches/run; each subcommand appends to RESULTS (a JSON-lines
file) and `finish` writes the final JSON.

A result record:
  item      the suite's item number ("1" .. "7"), as a string
  id        a stable key, e.g. "1.process-cold"
  name      what was measured, in words
  metric    e.g. "median wall time", "p99", "requests/s"
  value     wasmlet's number (null when not measured)
  unit      e.g. "ms", "s", "runs/s", "MiB/s"
  better    "lower" or "higher"
  peer      {"name", "value", "command"} measured in the same run, or null
  ratio     value / peer value, or null
  anchor    {"name", "value", "unit", "source", "note"} a published reference, or null with
            anchor_note saying none is published
  command   the exact command that produced the value
  status    "measured" or "not yet measured"
  note      what the number means or why it is what it is
  loadavg   the 1-minute load average when the record was made (other work on the machine)
  samples   (optional) raw samples for the report's plots
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys

SLO = {"name": "Kubernetes pod startup SLO (p99 per cluster-day)", "value": 5.0, "unit": "s",
       "source": "kubernetes/community sig-scalability/slos/pod_startup_latency.md",
       "note": "p99 of creation to all containers started, observed by a watch, image pull excluded, <= 5 s"}
MAX_PODS = {"name": "kubelet default maxPods", "value": 110, "unit": "pods",
            "source": "KubeletConfiguration maxPods default", "note": "the stock kubelet's pods-per-node default"}
RUNWASI_TASKS = {"name": "runwasi wasmtime shim, published stress test (1,000 tasks, their machine)",
                 "value": 329.85, "unit": "tasks/s",
                 "source": "containerd/runwasi docs/src/benchmarks.md, 'Runwasi vs. Native Execution'",
                 "note": "runc running a distroless wasmtime image: 84.78 tasks/s in the same table; "
                         "other hardware and parallelism, so an anchor, not a ratio"}


def loadavg() -> float:
    return float(open("/proc/loadavg").read().split()[0])


def record(results: str, **r) -> None:
    r.setdefault("status", "measured")
    r.setdefault("peer", None)
    r.setdefault("anchor", None)
    peer = r["peer"]
    if r.get("value") is not None and peer and peer.get("value"):
        r["ratio"] = round(r["value"] / peer["value"], 3)
    else:
        r.setdefault("ratio", None)
    if r["anchor"] is None:
        r.setdefault("anchor_note", "none published")
    r["loadavg"] = loadavg()
    with open(results, "a") as f:
        f.write(json.dumps(r) + "\n")


# ---- item 1: module start ------------------------------------------------------------------


def module_start(results, cold_json, warm_json, empty_json, runs):
    """hyperfine JSONs of benches/run-vs-wasmtime: wasmlet run vs wasmtime run, cold and warm
    (and `wasmlet run --engine wasmer`, when the run timed it too)."""
    hf = f"RUNS={runs} bash benches/run-vs-wasmtime: hyperfine -N --warmup 3 --runs {runs}"
    commands = {
        "cold": ("wasmlet run --no-cache hello.wasm", "wasmtime run -C cache=n hello.wasm"),
        "warm": ("wasmlet run hello.wasm  # WASMLET_CACHE_DIR holds its compiled code",
                 "wasmtime run -C cache=y -C cache-config=CACHE.toml hello.wasm"),
        "empty": ("wasmlet run --no-cache empty.wasm", "wasmtime run -C cache=n empty.wasm"),
    }
    for kind, path in (("cold", cold_json), ("warm", warm_json), ("empty", empty_json)):
        measured = json.load(open(path))["results"]
        ours, peer = measured[:2]
        what = {"cold": "no compile cache (wasmlet --no-cache, wasmtime -C cache=n)", "warm": "compile cache warm",
                "empty": "an empty module (one empty _start, no cache): what a process costs around the compile"}[kind]
        process_row(results, f"1.process-{kind}", "wasmlet run", kind, ours, peer,
                    (f"{hf} '{commands[kind][0]}'", f"{hf} '{commands[kind][1]}'"), what)
        if len(measured) > 2:
            wasmer = commands[kind][0].replace("wasmlet run", "wasmlet run --engine wasmer")
            process_row(results, f"1.process-{kind}-wasmer", "wasmlet run --engine wasmer", kind,
                        measured[2], peer, (f"{hf} '{wasmer}'", f"{hf} '{commands[kind][1]}'"),
                        f"{what}; wasmer 7.3 (Cranelift) behind wasmlet's engine seam")


def process_row(results, rid, runner, kind, ours, peer, commands, what):
    """One whole-process start of item 1: `runner` of `subject` against `wasmtime run`."""
    name = (f"`{runner}` of an empty module, whole process" if kind == "empty"
            else f"`{runner} hello.wasm` whole process, {kind}")
    record(results, item="1", id=rid, name=name,
           metric="median wall time", value=round(ours["median"] * 1e3, 2), unit="ms", better="lower",
           peer={"name": "wasmtime CLI `wasmtime run`", "value": round(peer["median"] * 1e3, 2),
                 "command": commands[1]},
           command=commands[0],
           note=(f"hyperfine -N, {len(ours['times'])} runs, {what}; mean {ours['mean'] * 1e3:.2f} ms "
                 f"(wasmtime {peer['mean'] * 1e3:.2f}), user+sys {(ours['user'] + ours['system']) * 1e3:.2f} ms "
                 f"(wasmtime {(peer['user'] + peer['system']) * 1e3:.2f})"),
           samples={"wasmlet_ms": [t * 1e3 for t in ours["times"]],
                    "peer_ms": [t * 1e3 for t in peer["times"]]})


def inprocess(results, log, command):
    """The runtime's bench example: runs/s per core for each way of starting hello."""
    text = open(log).read()
    rate = {}
    for m in re.finditer(r"^(hello [^\n]*?)\s+(\d+) runs/s/core\s+([\d.]+) us/run\s+\((\d+) runs\)", text, re.M):
        rate[m.group(1).strip()] = (int(m.group(2)), float(m.group(3)), int(m.group(4)))
    pooled = next(v for k, v in rate.items() if "Pooling" in k)
    ondemand = next(v for k, v in rate.items() if "OnDemand" in k)
    record(results, item="1", id="1.inprocess-pooled", name="instantiate and run hello in process, loaded once",
           metric="runs per second per core", value=pooled[0], unit="runs/s", better="higher",
           peer={"name": "same, on-demand allocator (not pooled)", "value": ondemand[0], "command": command},
           command=command, note=f"pooling allocator, {pooled[2]} runs on one thread ({pooled[1]} us each)")
    for key, rid, words in (("cold", "1.inprocess-cold", "compile every run"),
                            ("warm", "1.inprocess-warm", "load from the compile cache every run")):
        v = next(v for k, v in rate.items() if k.startswith(f"hello {key}"))
        record(results, item="1", id=rid, name=f"instantiate and run hello in process, {words}",
               metric="runs per second per core", value=v[0], unit="runs/s", better="higher",
               command=command, note=f"{v[2]} runs on one thread ({v[1]} us each)")
    m = re.search(r"idle instances: (\d+) of (\d+) alive, RSS \+(\d+) KiB, ([\d.]+) KiB per instance", text)
    if m:
        record(results, item="1", id="1.idle-memory", name=f"memory per idle instance ({m.group(2)} sleeping)",
               metric="resident memory per instance", value=float(m.group(4)), unit="KiB", better="lower",
               command=command, note=f"{m.group(1)} of {m.group(2)} alive, RSS +{m.group(3)} KiB in total")
    m = re.search(r"kill of a tight loop: mean ([\d.]+)(\w+), worst ([\d.]+)(\w+)", text)
    if m:
        scale = {"ms": 1, "µs": 1e-3, "us": 1e-3, "s": 1e3, "ns": 1e-6}
        record(results, item="1", id="1.kill", name="kill of a guest spinning in a tight loop",
               metric="mean time to exit status", value=round(float(m.group(1)) * scale.get(m.group(2), 1), 3),
               unit="ms", better="lower", command=command,
               note=f"worst {m.group(3)} {m.group(4)}; epoch interruption ticks every 10 ms")


# ---- item 3: pods through the kubelet ------------------------------------------------------


def pods(results, until, ours_json, peer_json, command_ours, command_peer):
    ours, peer = json.load(open(ours_json)), json.load(open(peer_json))
    so, sp = ours["summary"], peer["summary"]
    for p in (50, 90, 99):
        anchor = dict(SLO, met=so["latency_s"]["p99"] is not None and so["latency_s"]["p99"] <= 5.0) if p == 99 else None
        record(results, item="3", id=f"3.{until.lower()}-p{p}",
               name=f"pod creation -> {until} through kubelet + containerd + wasmlet shim",
               metric=f"p{p}", value=so["latency_s"][f"p{p}"], unit="s", better="lower",
               peer={"name": "kubelet + containerd + runc, static busybox", "value": sp["latency_s"][f"p{p}"],
                     "command": command_peer},
               anchor=anchor, command=command_ours,
               note=(f"{so['ok']}/{so['n']} pods {until} (runc {sp['ok']}/{sp['n']}), batches of {ours['batch']}; "
                     f"creation = client clock before the create request; by creationTimestamp (1 s "
                     f"resolution) p{p} is {so['sli_latency_s'][f'p{p}']} s (runc {sp['sli_latency_s'][f'p{p}']} s)"),
               samples=({"wasmlet_s": [s["latency_s"] for s in ours["samples"] if s["latency_s"] is not None],
                         "peer_s": [s["latency_s"] for s in peer["samples"] if s["latency_s"] is not None]}
                        if p == 50 else None))


def shim_ctr(results, log, command):
    """The shim's bench test: ctr run medians, tasks/s with 4 in parallel, RSS per pod."""
    text = open(log).read()
    ms = {k: float(v) for k, v in re.findall(r"^\s+(wasmlet shim, cold|wasmlet shim, warm|runc, busybox-static echo, first run|runc, busybox-static echo, warm)[^:]*:\s+([\d.]+) ms", text, re.M)}
    n = re.search(r"median of (\d+)", text)
    if ms:
        record(results, item="3", id="3.ctr-run-warm", name="`ctr run --rm` of hello, image present, warm",
               metric="median wall time", value=ms["wasmlet shim, warm"], unit="ms", better="lower",
               peer={"name": "runc, busybox-static echo", "value": ms["runc, busybox-static echo, warm"], "command": command},
               command=command, note=f"median of {n.group(1) if n else '?'}; wasmlet cold (compile cache entry removed) "
                                     f"{ms['wasmlet shim, cold']} ms, runc first run {ms['runc, busybox-static echo, first run']} ms")
    m = re.search(r"(\d+) tasks, (\d+) in parallel: wasmlet ([\d.]+) tasks/s, runc ([\d.]+) tasks/s", text)
    if m:
        record(results, item="3", id="3.ctr-tasks", name=f"`ctr run --rm` tasks per second, {m.group(2)} in parallel",
               metric="tasks/s", value=float(m.group(3)), unit="tasks/s", better="higher",
               peer={"name": "runc, busybox-static echo", "value": float(m.group(4)), "command": command},
               anchor=RUNWASI_TASKS, command=command, note=f"{m.group(1)} tasks each")
    m = re.search(r"resident memory per running pod \((\d+) pods\): wasmlet shim (\d+) KiB; runc shim \+ container process (\d+) KiB", text)
    if m:
        record(results, item="3", id="3.rss-per-pod", name=f"resident memory per running pod ({m.group(1)} pods)",
               metric="RSS per pod", value=round(int(m.group(2)) / 1024, 1), unit="MiB", better="lower",
               peer={"name": "runc shim + container process", "value": round(int(m.group(3)) / 1024, 1), "command": command},
               command=command, note="wasmlet: the shim process is the whole pod; runc: shim plus busybox sleep")


# ---- item 8: the shim beside runwasi --------------------------------------------------------

RUNWASI = "containerd/runwasi's wasmtime shim (containerd-shim-wasmtime-v1)"
# What each row is named, its unit and direction, and the goal (wasmlet / runwasi) it is held to.
PEER_ROWS = {
    "ctr-run-warm": ("`ctr run --rm` of hello, warm", "median wall time", "ms", "lower", "<= 0.5"),
    "ctr-tasks": ("`ctr run --rm` of hello, 4 in parallel", "tasks/s", "tasks/s", "higher", ">= 2"),
    "rss": ("resident memory per running pod, {} pod(s)", "RSS per pod", "MiB", "lower", "<= 0.5"),
    "http-rps": ("wasi:http hello on its pod IP", "requests/s", "req/s", "higher", ">= 2"),
    "http-p99": ("wasi:http hello on its pod IP", "p99 latency", "ms", "lower", "<= 0.5"),
    "stress-mock": ("runwasi's stress test, its mocked containerd (the shim alone)", "tasks/s", "tasks/s", "higher", ">= 2"),
    "stress-containerd": ("runwasi's stress test through containerd", "tasks/s", "tasks/s", "higher", ">= 2"),
    "http-p99-fixed": ("wasi:http hello on its pod IP, at a fixed rate (a quarter of the slower shim's peak)", "p99 latency", "ms", "lower", "<= 0.5"),
    "ctr-task-cpu": ("CPU per `ctr run --rm` task outside ctr and containerd", "CPU per task", "ms", "lower", None),
}


def runwasi(results, log, command):
    """The `PEERBENCH {json}` lines of crates/shim/tests/runwasi_bench.rs."""
    for line in open(log):
        if not line.startswith("PEERBENCH "):
            continue
        r = json.loads(line.split(" ", 1)[1])
        kind, _, count = r["metric"].partition("-") if r["metric"].startswith("rss-") else (r["metric"], "", "")
        name, metric, unit, better, goal = PEER_ROWS[kind]
        name = name.format(count)
        ours, theirs = r["values"]["wasmlet"], r["values"]["runwasi"]
        if unit == "MiB":
            ours, theirs = round(ours / 1024, 2), round(theirs / 1024, 2)
        record(results, item="8", id=f"8.{r['metric']}", name=name, metric=metric, value=ours, unit=unit,
               better=better, peer={"name": RUNWASI, "value": theirs, "command": command}, command=command,
               goal=goal, note=r["note"])
        wasmer = r["values"].get("wasmlet-wasmer")
        if wasmer is not None:  # wasmlet's wasmer shim, a third column of the same run
            if unit == "MiB":
                wasmer = round(wasmer / 1024, 2)
            record(results, item="8", id=f"8.{r['metric']}-wasmer", name=f"{name}, wasmlet's wasmer shim",
                   metric=metric, value=wasmer, unit=unit, better=better,
                   peer={"name": RUNWASI, "value": theirs, "command": command}, command=command,
                   note=r["note"] + f"; wasmlet's wasmtime shim in the same run: {ours} {unit}")


def runwasi_pods(results, ours_json, theirs_json, runc_json, command_ours, command_theirs):
    """Pod creation -> Ready through the kubelet: the wasmlet shim against runwasi (and runc)."""
    ours, theirs = (json.load(open(p))["summary"] for p in (ours_json, theirs_json))
    runc = json.load(open(runc_json))["summary"] if os.path.exists(runc_json) else None
    for p in (50, 90, 99):
        key = f"p{p}"
        note = (f"{ours['ok']}/{ours['n']} wasmlet-shim pods and {theirs['ok']}/{theirs['n']} runwasi pods Ready "
                f"(a sleeper, hostNetwork, image imported); same kubelet, containerd and control plane"
                + (f"; kubelet + containerd + runc {key} {runc['latency_s'][key]} s" if runc else ""))
        record(results, item="8", id=f"8.ready-{key}", name="pod creation -> Ready through kubelet + containerd",
               metric=key, value=ours["latency_s"][key], unit="s", better="lower",
               peer={"name": RUNWASI, "value": theirs["latency_s"][key], "command": command_theirs},
               command=command_ours, goal="<= 0.5", note=note)


# ---- items 2 and 4: the node agent -------------------------------------------------------


def node_pods(results, until, ours_json, shim_json, runc_json, command):
    """Item 2: the node agent's samples beside item 3's two paths (when they ran)."""
    ours = json.load(open(ours_json))
    so = ours["summary"]
    peers = {}
    for key, path in (("shim", shim_json), ("runc", runc_json)):
        if os.path.exists(path):
            peers[key] = json.load(open(path))["summary"]["latency_s"]
    for p in (50, 90, 99):
        anchor = dict(SLO, met=so["latency_s"]["p99"] is not None and so["latency_s"]["p99"] <= 5.0) if p == 99 else None
        peer = ({"name": "kubelet + containerd + runc, static busybox", "value": peers["runc"][f"p{p}"], "command": "item 3"}
                if "runc" in peers else None)
        record(results, item="2", id=f"2.{until.lower()}-p{p}", name=f"pod creation -> {until} through the wasmlet node agent",
               metric=f"p{p}", value=so["latency_s"][f"p{p}"], unit="s", better="lower", peer=peer, anchor=anchor,
               command=command,
               note=(f"{so['ok']}/{so['n']} pods {until} in {ours['wall_s']:.0f} s, batches of {ours['batch']}; "
                     "kubelet + containerd + wasmlet shim (item 3) "
                     + (f"p{p} {peers['shim'][f'p{p}']} s" if "shim" in peers else "not run in this run")
                     + f"; by creationTimestamp (1 s resolution) p{p} {so['sli_latency_s'][f'p{p}']} s; "
                     "a pod's ServiceAccount token and kube-root-ca.crt are fetched before it starts"),
               samples=({"wasmlet_s": [s["latency_s"] for s in ours["samples"] if s["latency_s"] is not None]}
                        if p == 50 else None))


def guest_pods(results, work, guests, samples, command):
    """Item 9, pods: creation -> Ready/Succeeded through the node agent for never-pulled images
    of each guest, cold (the node's compile cache emptied) and warm (its code cached)."""
    for guest in guests.split(","):
        for mode in ("cold", "warm"):
            runs = []
            for i in range(1, int(samples) + 1):
                path = os.path.join(work, f"guest-{guest}-{mode}-{i}.json")
                if os.path.exists(path):
                    runs += json.load(open(path))["samples"]
            lat = [s["latency_s"] for s in runs if s["latency_s"] is not None]
            until = "Ready" if guest.endswith("-http") else "Succeeded"
            what = ("the node's compile cache emptied first: pull, compile and start" if mode == "cold"
                    else "its compiled code cached by an earlier pod: pull and start")
            record(results, item="9", id=f"9.pod-{guest}-{mode}", name=f"pod creation -> {until}, {guest}, never-pulled image, {mode}",
                   metric="median", value=median(lat) if lat else None, unit="s", better="lower", command=command,
                   note=(f"{len(lat)}/{len(runs)} pods {until} through wasmlet node, one at a time, each a tag the "
                         f"node never pulled ({what}); samples {', '.join(f'{v:.2f}' for v in lat)} s"),
                   samples={"wasmlet_s": lat})


def density(results, density_json, command):
    """Item 4: the largest step whose pods were all Running, what gave out, and what the agent
    and the API server cost per pod at that step."""
    d = json.load(open(density_json))
    good = [s for s in d["steps"] if s["running"] == s["pods"] and not s["failed"]]
    best = good[-1] if good else None
    kinds = " and ".join(c["image"].rsplit("/", 1)[-1] for t in d.get("templates", []) for c in t["spec"]["containers"])
    procs = (best or {}).get("processes", {})
    agent, api = procs.get("agent", {}), procs.get("kube-apiserver", {})
    last = d["steps"][-1] if d["steps"] else {}
    record(results, item="4", id="4.density", name=f"idle pods one node agent keeps Running ({kinds}, in turn)",
           metric="pods Running", value=best["pods"] if best else 0, unit="pods", better="higher",
           anchor=dict(MAX_PODS), command=command,
           note=(f"gave out: {d['gave_out']}; steps bounded by {d.get('step_timeout_s', '?')} s each; "
                 f"{best['pods'] / MAX_PODS['value']:.0f}x the kubelet's default maxPods" if best else
                 f"gave out: {d['gave_out']}") + (
                 f"; at the last step ({last.get('pods')} pods) not Running: {last.get('not_running')}"
                 if last and last is not best and last.get("not_running") else ""),
           samples={"steps": d["steps"], "gave_out": d["gave_out"]})
    if not best:
        return
    # Item 3's memory per pod (when it ran in this run): runc's shim and container, and the
    # wasmlet shim, each a process per pod.
    item3 = next((r for r in map(json.loads, open(results)) if r["id"] == "3.rss-per-pod"), None)
    peer = shim_note = None
    if item3:
        peer = {"name": "kubelet + containerd + runc: shim + container process per pod (item 3)",
                "value": round(item3["peer"]["value"] * 1024), "command": item3["command"]}
        shim_note = f"; the wasmlet shim path of item 3: {round(item3['value'] * 1024):,} KiB per pod"
    if agent.get("rss_kib_per_pod") is not None:
        record(results, item="4", id="4.rss-per-pod", name=f"node agent resident memory per idle pod ({best['pods']} pods)",
               metric="RSS per pod", value=agent["rss_kib_per_pod"], unit="KiB", better="lower", command=command,
               peer=peer,
               note=(f"{shim_note[2:]}; " if shim_note else "") + (f"agent RSS {agent['rss_kib'] / 1024:.0f} MiB at {best['pods']} pods (growth since before the first "
                     f"step, divided by the pods Running); {agent.get('threads', '?')} threads, {agent.get('fds', '?')} open "
                     f"files, {agent.get('maps', '?')} memory mappings; CPU {agent.get('cpu_s_in_step', '?')} s during the "
                     f"step, {agent.get('idle_cpu_pct', '?')} % of a core idle afterwards"))
    if api.get("rss_kib") is not None:
        record(results, item="4", id="4.apiserver-rss", name=f"API server resident memory with {best['pods']} pods",
               metric="RSS", value=round(api["rss_kib"] / 1024), unit="MiB", better="lower", command=command,
               note=(f"CPU {api.get('cpu_s_in_step', '?')} s during the step ({best['seconds']} s), "
                     f"{api.get('idle_cpu_pct', '?')} % of a core idle afterwards; etcd RSS "
                     f"{procs.get('etcd', {}).get('rss_kib', 0) / 1024:.0f} MiB"))
    idle = best.get("idle_api_requests_per_s")
    if idle:
        top = ", ".join(f"{k} {v:,.1f}/s" for k, v in list(idle.items())[:4])
        record(results, item="4", id="4.idle-api-requests", name=f"API server requests per second with {best['pods']} idle pods",
               metric="requests/s, idle", value=round(sum(idle.values()), 1), unit="req/s", better="lower", command=command,
               note=(f"apiserver_request_total over {d.get('idle_window_s', '?')} s after the step, no pod changing; "
                     f"busiest: {top}; API server {api.get('idle_cpu_pct', '?')} % of a core, etcd "
                     f"{procs.get('etcd', {}).get('idle_cpu_pct', '?')} %, agent {agent.get('idle_cpu_pct', '?')} %"),
               samples={"by_step": {str(st["pods"]): st.get("idle_api_requests_per_s") for st in d["steps"]}})
    lat = best.get("latency_s", {})
    if lat.get("p99") is not None:
        record(results, item="4", id="4.step-p99", name=f"pod creation -> Running of the pods added by the {best['pods']}-pod step",
               metric="p99", value=lat["p99"], unit="s", better="lower", command=command,
               note=(f"p50 {lat.get('p50')} s; created back to back in batches of {d.get('batch', '?')}, so this is the "
                     f"queue through the API server, the scheduler and the agent, not the SLI; the step took "
                     f"{best['seconds']} s" + split(best)))


def split(step: dict) -> str:
    """Where a density step's latency went: creation -> bound by the scheduler, bound -> Running."""
    a, b = step.get("to_scheduled_s") or {}, step.get("scheduled_to_observed_s") or {}
    if a.get("p50") is None or b.get("p50") is None:
        return ""
    return (f"; of it, creation -> bound by the scheduler p50 {a['p50']:.0f} s, p99 {a['p99']:.0f} s, and bound -> "
            f"Running on the agent p50 {b['p50']:.1f} s, p99 {b['p99']:.1f} s (conditions have whole-second times, "
            "so each share is within 1 s)")


# ---- item 5: pull --------------------------------------------------------------------------


def pull(results, log, command):
    text = open(log).read()
    head = re.search(r"pull of one (\d+) MiB blob from a loopback registry, (\d+) runs", text)
    ours = re.search(r"wasmlet \(hash \+ store\)\s+(\d+)\s+(\d+)", text)
    curl = re.search(r"curl -o file\s+(\d+)\s+(\d+)", text)
    record(results, item="5", id="5.pull", name=f"pull of a {head.group(1)} MiB blob from a loopback registry",
           metric="median throughput", value=int(ours.group(2)), unit="MiB/s", better="higher",
           peer={"name": "curl -o of the same blob URL", "value": int(curl.group(2)), "command": command},
           command=command, note=f"median of {head.group(2)}; wasmlet hashes while it streams and renames into its store; "
                                 f"best: wasmlet {ours.group(1)}, curl {curl.group(1)} MiB/s")


# ---- item 6: HTTP --------------------------------------------------------------------------


def parse_wrk(path: str) -> dict:
    text = open(path).read()
    unit = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    lat = {p: float(v) * unit[u] for p, v, u in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    total = re.search(r"(\d+) requests in ([\d.]+)s", text)
    errors = re.search(r"Socket errors: (.*)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {"rps": rps, "latency_ms": lat, "requests": int(total.group(1)), "seconds": float(total.group(2)),
            "socket_errors": errors.group(1) if errors else None, "non_2xx": int(non2xx.group(1)) if non2xx else 0}


def median(values):
    v = sorted(values)
    return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2


def http(results, work, rounds, command, peer_command, peer_name):
    """wrk logs WORK/wrk-{wasmlet,wasmtime}-ROUND.txt: medians over the alternating rounds."""
    rounds = int(rounds)
    ours = [parse_wrk(os.path.join(work, f"wrk-wasmlet-{i}.txt")) for i in range(1, rounds + 1)]
    peer = [parse_wrk(os.path.join(work, f"wrk-wasmtime-{i}.txt")) for i in range(1, rounds + 1)]

    def med_lat(runs, p):
        return median([r["latency_ms"][p] for r in runs])
    lat_ours = {p: med_lat(ours, p) for p in ours[0]["latency_ms"]}
    lat_peer = {p: med_lat(peer, p) for p in peer[0]["latency_ms"]}
    per_round = ", ".join(f"{o['rps']:,.0f}/{q['rps']:,.0f}" for o, q in zip(ours, peer))
    errors = sum(r["non_2xx"] for r in ours + peer)
    sock = [r["socket_errors"] for r in ours + peer if r["socket_errors"]]
    note = (f"median of {rounds} rounds of {ours[0]['seconds']:.0f} s, alternating; req/s per round "
            f"(wasmlet/peer): {per_round}; non-2xx responses {errors}, socket errors {'; '.join(sock) or 'none'}; "
            "one component instance per request on both sides; wrk shares the 2 cores with the server")
    samples = {"wasmlet_latency_ms": lat_ours, "peer_latency_ms": lat_peer,
               "rounds": {"wasmlet": ours, "peer": peer}}
    record(results, item="6", id="6.http-rps", name="wasi:http hello, `wasmlet run --listen`",
           metric="requests/s", value=round(median([r["rps"] for r in ours])), unit="req/s", better="higher",
           peer={"name": peer_name, "value": round(median([r["rps"] for r in peer])), "command": peer_command},
           command=command, note=note, samples=samples)
    p99_rounds = ", ".join(f"{o['latency_ms']['99']:.2f}/{q['latency_ms']['99']:.2f}" for o, q in zip(ours, peer))
    record(results, item="6", id="6.http-p99", name="wasi:http hello, `wasmlet run --listen`",
           metric="p99 latency", value=round(lat_ours["99"], 3), unit="ms", better="lower",
           peer={"name": peer_name, "value": round(lat_peer["99"], 3), "command": peer_command},
           command=command, note=(f"median of the rounds' p99 (wasmlet/peer per round, ms: {p99_rounds}); "
                                  f"p50 {lat_ours['50']:.3f} ms (peer {lat_peer['50']:.3f} ms)"))


# ---- item 7: the pod network -----------------------------------------------------------------

NETBENCH_MODES = {"cni": "wasmlet node --network cni", "loopback": "wasmlet node --network loopback",
                  "runc": "kubelet + containerd + runc", "shim": "kubelet + containerd + wasmlet shim"}
NETBENCH_WORKLOADS = {"sleep": "an idle sleeper (Ready once started; busybox sleep on runc)",
                      "http": "the wasi:http hello component behind an httpGet readiness probe (busybox httpd on runc)"}


def netbench(results, log, command):
    """The `NETBENCH {json}` lines of cluster_bench (crates/cli/tests/cluster_bench.rs): pod
    creation -> Ready per profile, requests/s per target, density per step."""
    lines = [json.loads(line.split(" ", 1)[1]) for line in open(log) if line.startswith("NETBENCH ")]
    lat = {r["profile"]: r for r in lines if r["kind"] == "latency"}
    web = {r["target"]: r for r in lines if r["kind"] == "http"}
    steps = [r for r in lines if r["kind"] == "density"]
    summary = {r["mode"]: r for r in lines if r["kind"] == "density-summary"}
    base = {r["mode"]: r for r in lines if r["kind"] == "density-base"}
    setup = next((r for r in lines if r["kind"] == "setup"), {})
    done = next((r for r in lines if r["kind"] == "done"), {})
    wall = f"; the whole benchmark took {done['seconds'] / 60:.0f} min" if done.get("seconds") else ""

    def ratio(a, b):
        return f"{a / b:.2f}" if a is not None and b else "-"

    for w in ("sleep", "http"):
        ours, lo = lat.get(f"cni-{w}"), lat.get(f"loopback-{w}")
        if not ours:
            continue
        others = [lat[k] for k in (f"shim-{w}", f"runc-{w}") if k in lat]
        for p in (50, 90, 99):
            key = f"p{p}"
            note = (f"{ours['ok']}/{ours['n']} pods Ready on the CNI-mode agent, {lo['ok'] if lo else 0}/"
                    f"{lo['n'] if lo else 0} on the loopback-mode agent, in batches of {ours['batch']}, "
                    f"{ours['rounds']} rounds with the profiles taking turns; same cluster, same run: "
                    + "; ".join(f"{NETBENCH_MODES[o['mode']]} {key} {o[key]:.3f} s (CNI / it: {ratio(ours[key], o[key])})"
                                for o in others if o.get(key) is not None)
                    + f"; from creationTimestamp (1 s resolution) the CNI agent's p99 is {ours.get('sli_p99')} s")
            record(results, item="7", id=f"7.ready-{w}-{key}",
                   name=f"pod creation -> Ready, {w}: wasmlet node in CNI mode", metric=key,
                   value=ours[key], unit="s", better="lower",
                   peer={"name": "the same agent in loopback mode", "value": lo[key] if lo else None, "command": command},
                   anchor=dict(SLO, met=ours["p99"] is not None and ours["p99"] <= 5.0) if p == 99 else None,
                   command=command, note=note,
                   samples=({"wasmlet_s": ours["samples"], "peer_s": lo["samples"] if lo else [],
                             "profiles": {k: v["samples"] for k, v in lat.items()},
                             "table": [{k: v for k, v in r.items() if k not in ("samples", "template")}
                                       for r in lat.values()]}
                            if p == 50 else None))
        stock = lat.get(f"runc-{w}")
        if stock:
            for p in (50, 99):
                key = f"p{p}"
                record(results, item="7", id=f"7.ready-{w}-runc-{key}",
                       name=f"pod creation -> Ready, {w}: wasmlet node in CNI mode vs the stock kubelet", metric=key,
                       value=ours[key], unit="s", better="lower",
                       peer={"name": "kubelet + containerd + runc, static busybox, same bridge CNI plugin",
                             "value": stock[key], "command": command},
                       command=command, note=f"{stock['ok']}/{stock['n']} runc pods Ready; " + NETBENCH_WORKLOADS[w])
    cni_svc, lo_pod = web.get("cni-service"), web.get("loopback-pod")
    if cni_svc and lo_pod:
        others = "; ".join(f"{k}: {v['rps']:,.0f} req/s, p99 {v['p99_ms']:.2f} ms ({v['what']})" for k, v in web.items())
        rounds = " / ".join(f"{r['rps']:,.0f}" for r in cni_svc["rounds"])
        lo_rounds = " / ".join(f"{r['rps']:,.0f}" for r in lo_pod["rounds"])
        for metric, key, unit, better in (("requests/s", "rps", "req/s", "higher"), ("p99 latency", "p99_ms", "ms", "lower")):
            record(results, item="7", id=f"7.service-{'rps' if key == 'rps' else 'p99'}",
                   name="wasi:http hello through a ClusterIP (kube-proxy) to a CNI-mode agent's pod",
                   metric=metric, value=round(cni_svc[key], 3 if key != "rps" else None) if cni_svc[key] is not None else None,
                   unit=unit, better=better,
                   peer={"name": "the same component on a loopback-mode agent, dialled on its pod IP",
                         "value": round(lo_pod[key], 3 if key != "rps" else None) if lo_pod[key] is not None else None,
                         "command": command},
                   command=command,
                   note=(f"wrk -t2 -c{cni_svc['connections']} -d{cni_svc['seconds']}s, median of {len(cni_svc['rounds'])} "
                         f"rounds alternating over the targets (req/s per round {rounds}; loopback {lo_rounds}); every "
                         f"target: {others}; wrk, the agents, kube-proxy's rules and the control plane share the 2 cores"),
                   samples={"targets": web} if key == "rps" else None)
        pod = web.get("cni-pod")
        if pod:
            record(results, item="7", id="7.pod-rps", name="wasi:http hello on a CNI-mode agent's pod IP, from another node",
                   metric="requests/s", value=round(pod["rps"]), unit="req/s", better="higher",
                   peer={"name": "the same component on a loopback-mode agent, dialled on its pod IP",
                         "value": round(lo_pod["rps"]), "command": command},
                   command=command, note=f"p99 {pod['p99_ms']:.2f} ms (loopback {lo_pod['p99_ms']:.2f} ms); no kube-proxy rule on "
                                         "the way: the client's node routes the pod CIDR to the agent's node (host-gw)")
    cni = [s for s in steps if s["mode"] == "cni"]
    if cni:
        s = summary.get("cni", {})
        reached = [x for x in cni if x["reached"]]
        best = reached[-1] if reached else None
        most = max(cni, key=lambda x: x["running"])
        top = (s.get("warnings") or [{}])[0]
        lo_step = next((x for x in steps if x["mode"] == "loopback"), None)
        record(results, item="7", id="7.density", name="idle pods one CNI-mode agent keeps Running (sleepers and wasi:http servers)",
               metric="pods Running", value=most["running"], unit="pods", better="higher", anchor=dict(MAX_PODS),
               command=command,
               note=(f"steps {', '.join(str(x['step']) for x in cni)}; the last reached "
                     f"{best['step'] if best else 'none'}; gave out: {s.get('gave_out', '?')}"
                     + (f"; the most frequent warning ({top.get('count')}x {top.get('reason')}): {top.get('example', '')[:300]}"
                        if top else "")
                     + f"; all deleted in {s.get('delete_seconds', 0):.0f} s, left: {', '.join(s.get('left_after_delete') or []) or 'nothing'}"
                     + wall),
               samples={"steps": steps, "summary": summary, "base": base, "setup": setup})
        # The per-pod costs are read at the CNI step of as many pods as the loopback peer's step
        # (the same fixed costs spread over the same count), else at the last step reached.
        same = next((x for x in reached if lo_step and x["step"] == lo_step["step"]), best)
        if same and lo_step:
            pb, pl = same["per_pod"], lo_step["per_pod"]
            at_best = best["per_pod"] if best is not same else None
            rows = (("fds", "descriptors per pod held by the agent", "descriptors", "fds"),
                    ("kernel", "kernel memory per pod (unreclaimable slab + per-CPU)", "KiB", "unreclaimable_kernel_kib"),
                    ("rss", "agent resident memory per pod", "KiB", "rss_kib"),
                    ("cpu", "CPU per pod started (agent and the CNI plugins it runs)", "ms", "cpu_ms"))
            for rid, name, unit, key in rows:
                kinds = ""
                if rid == "fds":
                    kinds = "; by kind, CNI " + ", ".join(f"{k} {v}" for k, v in pb["fd_kinds"].items() if v) + \
                            "; loopback " + ", ".join(f"{k} {v}" for k, v in pl["fd_kinds"].items() if v)
                if rid == "kernel":
                    kinds = ("; /proc/meminfo growth per pod, CNI " + ", ".join(f"{k} {v}" for k, v in pb["kernel_kib"].items())
                             + "; loopback " + ", ".join(f"{k} {v}" for k, v in pl["kernel_kib"].items())
                             + f"; left after all were deleted: {s.get('kernel_kib_left_after_delete')} KiB in all")
                # A peer with no measurable growth (noise around zero) has no ratio to give.
                peer = ({"name": f"the same pods on a loopback-mode agent ({lo_step['step']} pods)", "value": pl[key],
                         "command": command} if pl[key] > 0.05 * abs(pb[key]) else None)
                if peer is None:
                    kinds += (f"; on the loopback-mode agent ({lo_step['step']} pods) the same measure grew by "
                              f"{pl[key]} {unit} per pod, no growth this measurement can tell from noise")
                if at_best:
                    kinds += f"; at the last step reached, {best['step']} pods: {at_best[key]} {unit} per pod"
                record(results, item="7", id=f"7.density-{rid}", name=f"{name} ({same['step']} idle pods, CNI mode)",
                       metric=f"{unit} per pod", value=pb[key], unit=unit, better="lower", peer=peer,
                       command=command,
                       note=(f"growth from before the first step to the step, divided by the pods Running; per pod in CNI "
                             f"mode: {pb['namespaces']} network namespaces, {pb['veths']} veths, {pb['allocations']} IP "
                             f"allocations" + kinds))


# ---- items not measured yet ----------------------------------------------------------------


def pending(results, item, rid, name, metric, unit, reason, command):
    anchor = dict(SLO) if item == "2" else dict(MAX_PODS) if item == "4" else None
    record(results, item=item, id=rid, name=name, metric=metric, value=None, unit=unit, better="lower" if item == "2" else "higher",
           anchor=anchor, command=command, status="not yet measured", note=reason)


# ---- the JSON and the table ----------------------------------------------------------------


def sh(*cmd: str) -> str:
    try:
        out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "unknown")
    mem = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem / 1024 / 1024, 1),
            "kernel": platform.release(), "os": sh("sh", "-c", ". /etc/os-release && echo $PRETTY_NAME")}


def versions(rev: str, root: str, cache: str, wasmtime_cli: str) -> dict:
    lock = open(os.path.join(root, "Cargo.lock")).read()
    wasmtime = re.search(r'name = "wasmtime"\nversion = "([^"]+)"', lock)
    kube = re.search(r"KUBE_VERSION=(\S+)", open(os.path.join(root, "tests/cluster/versions.env")).read())
    return {"wasmlet": rev, "wasmtime_crate": wasmtime.group(1) if wasmtime else "unknown",
            "wasmtime_cli": sh(wasmtime_cli, "--version"),
            "containerd": sh(os.path.join(cache, "bin/containerd"), "--version"),
            "runc": sh("runc", "--version"), "kubernetes": kube.group(1) if kube else "unknown",
            "rustc": sh("rustc", "--version"), "hyperfine": sh("hyperfine", "--version"),
            "wrk": sh("sh", "-c", "wrk -v 2>&1 | head -1"), "curl": sh("curl", "--version"),
            "docker_registry": sh("docker-registry", "--version")}


def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}" if abs(v) < 1000 else f"{v:,.0f}"
    return f"{v:,}"


def table(results: list[dict]) -> str:
    rows = [("item", "what", "metric", "wasmlet", "peer", "ratio", "anchor / status")]
    for r in results:
        if r["status"] != "measured":
            tail = f"{r['status']}: {r['note']}"
        elif r["anchor"]:
            a = r["anchor"]
            tail = f"{a['name'].split(' (')[0]}: {fmt(a['value'])} {a['unit']}" + (
                "" if "met" not in a else " (met)" if a["met"] else " (NOT met)")
        else:
            tail = ""
        unit = f" {r['unit']}"
        rows.append((r["item"], r["name"][:60], r["metric"], fmt(r["value"]) + (unit if r["value"] is not None else ""),
                     fmt(r["peer"]["value"]) + unit if r["peer"] else "-", fmt(r["ratio"]) if r["ratio"] else "-", tail))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:-1], widths)) + "  " + row[-1] for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def finish(results, out, rev, root, cache, wasmtime_cli, started):
    records = [json.loads(line) for line in open(results)]
    order = {"1": 1, "2": 2, "3": 3, "4": 4, "5": 5, "6": 6, "7": 7}
    records.sort(key=lambda r: order.get(r["item"], 9))
    doc = {"schema": 1, "suite": "benches/run", "started": started,
           "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "machine": machine(), "versions": versions(rev, root, cache, wasmtime_cli), "results": records}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(table(records))
    print(f"\nJSON: {out}")


def main():
    cmd, results, *rest = sys.argv[1:]
    {"module-start": module_start, "inprocess": inprocess, "pods": pods, "shim-ctr": shim_ctr, "pull": pull,
     "http": http, "pending": pending, "node-pods": node_pods, "density": density, "netbench": netbench,
     "runwasi": runwasi, "runwasi-pods": runwasi_pods, "guest-pods": guest_pods, "finish": finish}[cmd](results, *rest)


if __name__ == "__main__":
    main()
