#!/usr/bin/env python3
"""Pod start latency and density against a real Kubernetes API server (stdlib only).

Two subcommands, both driven by a pod template (a JSON Pod manifest without a name):

  latency  creates COUNT pods in batches of BATCH and watches each until it is Running (every
           container started), Ready (its Ready condition True: readiness probes passed) or
           Succeeded, as the Kubernetes pod-startup SLI defines it: from
           the pod's creation to the moment a watch observes it, images already present (no
           pull), no init containers. Writes every sample and p50/p90/p99 as JSON.
  density  steps the number of idle pods up (e.g. 500,1000,2000,5000): at each step creates
           pods up to the total, waits until all are Running, samples the resident memory and
           CPU time (during the step, and over --idle-window seconds after it, with the API
           server's requests per second by kind over that window), threads, open
           files and memory mappings of the processes named with --pid (the node agent, the
           control plane), and stops at the first step that degrades (pods not Running within
           the step's time, a pod Failed, a process gone, or the machine's available memory
           under --min-free-mib). Pods take the --template and each --also template in turn.

Creation time: metadata.creationTimestamp has whole-second resolution, so each sample also
keeps the client's clock just before the create request (millisecond resolution; the request
itself takes a few ms on loopback). `latency_s` is from the client's clock, `sli_latency_s`
from creationTimestamp (as Kubernetes' own SLI tooling computes it, to the second).

Every load is bounded: COUNT pods, BATCH at a time, a time limit per batch and per step, and
the pods are deleted at the end (--keep to leave them).

Usage:
  podlatency.py latency --kubeconfig K --template T.json --name NAME --until Running \
      --count 50 --batch 10 --out samples.json
  podlatency.py density --kubeconfig K --template T.json --name NAME \
      --steps 500,1000,2000,5000 --pid agent=PID --pid apiserver=PID --out density.json
"""

from __future__ import annotations

import argparse
import base64
import copy
import datetime as dt
import http.client
import json
import os
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

LABEL = "wasmlet-bench"


# ---- a minimal Kubernetes client -----------------------------------------------------------


class Kube:
    """The API server of a kubeconfig (client certificate or token), over plain http.client."""

    def __init__(self, kubeconfig: str):
        raw = subprocess.run(
            ["kubectl", "config", "view", "--raw", "--minify", "-o", "json", "--kubeconfig", kubeconfig],
            check=True, capture_output=True, text=True,
        ).stdout
        cfg = json.loads(raw)
        cluster = cfg["clusters"][0]["cluster"]
        user = cfg["users"][0]["user"]
        url = urllib.parse.urlparse(cluster["server"])
        self.host, self.port = url.hostname, url.port or 443
        self.ctx = ssl.create_default_context()
        self._dir = tempfile.TemporaryDirectory(prefix="podlatency-")
        if "certificate-authority-data" in cluster:
            self.ctx.load_verify_locations(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
        elif "certificate-authority" in cluster:
            self.ctx.load_verify_locations(cafile=cluster["certificate-authority"])
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if "client-certificate-data" in user:
            cert = self._file("cert.pem", base64.b64decode(user["client-certificate-data"]))
            key = self._file("key.pem", base64.b64decode(user["client-key-data"]))
            self.ctx.load_cert_chain(cert, key)
        elif "client-certificate" in user:
            self.ctx.load_cert_chain(user["client-certificate"], user["client-key"])
        elif "token" in user:
            self.headers["Authorization"] = "Bearer " + user["token"]
        self._local = threading.local()

    def _file(self, name: str, data: bytes) -> str:
        path = os.path.join(self._dir.name, name)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, 0o600)
        return path

    def connect(self, timeout: float | None = 30) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=timeout)

    def request(self, method: str, path: str, body=None, timeout: float | None = None) -> dict:
        """One request on this thread's kept-alive connection (a connection of its own with
        `timeout`, for a slow one such as deleting thousands of pods); raises on a non-2xx answer."""
        for attempt in (1, 2):
            if timeout is not None:
                conn = self.connect(timeout=timeout)
            else:
                conn = getattr(self._local, "conn", None) or self.connect()
                self._local.conn = conn
            try:
                conn.request(method, path, body=None if body is None else json.dumps(body), headers=self.headers)
                resp = conn.getresponse()
                data = resp.read()
            except (http.client.HTTPException, OSError):
                self._local.conn = None
                if attempt == 2:
                    raise
                continue
            if resp.status // 100 != 2:
                raise RuntimeError(f"{method} {path}: HTTP {resp.status}: {data[:500]!r}")
            return json.loads(data) if data else {}
        raise AssertionError("unreachable")

    def watch(self, path: str, resource_version: str, timeout_s: int, connected=None):
        """Yields (event type, object) of a watch from resource_version for up to timeout_s;
        calls connected() once the API server has answered the request."""
        sep = "&" if "?" in path else "?"
        query = f"{sep}watch=1&allowWatchBookmarks=true&resourceVersion={resource_version}&timeoutSeconds={timeout_s}"
        conn = self.connect(timeout=timeout_s + 30)
        conn.request("GET", path + query, headers=self.headers)
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"watch {path}: HTTP {resp.status}: {resp.read()[:500]!r}")
        if connected:
            connected()
        try:
            while True:
                line = resp.readline()
                if not line:
                    return
                event = json.loads(line)
                yield event["type"], event["object"]
        finally:
            conn.close()


# ---- pods and what a watch sees ------------------------------------------------------------


def parse_time(stamp: str | None) -> float | None:
    if not stamp:
        return None
    return dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc).timestamp()


def reached(pod: dict, until: str) -> str | None:
    """'ok' when the pod reached `until` (Running: every container started; Ready: its Ready
    condition is True, after its readiness probes passed), 'failed' when it can no longer get
    there, else None."""
    status = pod.get("status", {})
    phase = status.get("phase")
    if phase == "Failed" or (until in ("Running", "Ready") and phase == "Succeeded"):
        return "failed"
    if until == "Succeeded":
        return "ok" if phase == "Succeeded" else None
    if until == "Ready":
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        return "ok" if ready else None
    if phase != "Running":
        return None
    containers = status.get("containerStatuses") or []
    wanted = len(pod.get("spec", {}).get("containers", []))
    started = [c for c in containers if c.get("started") or "running" in c.get("state", {})]
    return "ok" if containers and len(started) == wanted else None


def describe(pod: dict) -> str:
    """A pod's state in a few words: phase, unscheduled, or its first container's waiting reason."""
    status = pod.get("status", {})
    phase = status.get("phase", "?")
    if not pod.get("spec", {}).get("nodeName"):
        return f"{phase}, unscheduled"
    for c in status.get("containerStatuses") or []:
        waiting = c.get("state", {}).get("waiting")
        if waiting:
            return f"{phase}, {waiting.get('reason', 'waiting')}"
    return f"{phase}, {'no container status' if not status.get('containerStatuses') else 'containers not started'}"


class Watcher:
    """Watches the pods of one label in a namespace and records when each reached `until`."""

    def __init__(self, kube: Kube, namespace: str, selector: str, until: str):
        self.kube, self.namespace, self.selector, self.until = kube, namespace, selector, until
        self.lock = threading.Condition()
        self.seen: dict[str, dict] = {}  # name -> {"observed", "outcome", "pod"}
        self.present: set[str] = set()
        self.state: dict[str, str] = {}  # name -> where it was last seen (phase, reason)
        self.stop = threading.Event()
        # Set once the watch is established: a pod created before that would be seen only
        # when the connection comes up, and its time would count the wait.
        self.connected = threading.Event()
        self.error: Exception | None = None
        path = f"/api/v1/namespaces/{namespace}/pods?labelSelector={urllib.parse.quote(selector)}"
        listing = kube.request("GET", path)
        self.rv = listing["metadata"]["resourceVersion"]
        self.present = {p["metadata"]["name"] for p in listing["items"]}
        self.path = path
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if not self.connected.wait(60) and not self.error:
            raise RuntimeError(f"the watch of {path} did not connect within 60 s")

    def _run(self):
        while not self.stop.is_set():
            try:
                for kind, pod in self.kube.watch(self.path, self.rv, 300, self.connected.set):
                    self._event(kind, pod)
                    if self.stop.is_set():
                        return
            except Exception as e:  # a broken watch is reported, not hidden
                self.error = e
                with self.lock:
                    self.lock.notify_all()
                return

    def _event(self, kind: str, pod: dict):
        now = time.time()
        if kind == "ERROR":
            raise RuntimeError(f"watch error: {pod}")
        self.rv = pod["metadata"].get("resourceVersion", self.rv)
        if kind == "BOOKMARK":
            return
        name = pod["metadata"]["name"]
        with self.lock:
            if kind == "DELETED":
                self.present.discard(name)
            else:
                self.present.add(name)
                self.state[name] = describe(pod)
                outcome = reached(pod, self.until)
                if outcome and name not in self.seen:
                    self.seen[name] = {"observed": now, "outcome": outcome, "pod": pod}
            self.lock.notify_all()

    def wait(self, done, deadline: float) -> bool:
        """Blocks until done() (called under the lock) is true or the deadline passes."""
        with self.lock:
            while not done():
                if self.error:
                    raise RuntimeError(f"watch failed: {self.error}")
                left = deadline - time.time()
                if left <= 0:
                    return False
                self.lock.wait(min(left, 1.0))
            return True

    def states(self, names: list[str]) -> dict[str, int]:
        """How many of `names` were last seen in each state (never seen: "not seen")."""
        out: dict[str, int] = {}
        with self.lock:
            for n in names:
                key = self.state.get(n, "not seen")
                out[key] = out.get(key, 0) + 1
        return out

    def close(self):
        self.stop.set()


def load_template(args) -> dict:
    """The template file, with every container's image replaced by --image when given."""
    with open(args.template) as f:
        template = json.load(f)
    if args.image:
        for c in template["spec"]["containers"]:
            c["image"] = args.image
    return template


def pod_manifest(template: dict, name: str, label: str) -> dict:
    pod = copy.deepcopy(template)
    pod.setdefault("apiVersion", "v1")
    pod.setdefault("kind", "Pod")
    meta = pod.setdefault("metadata", {})
    meta["name"] = name
    meta.setdefault("labels", {})[LABEL] = label
    return pod


def create_pods(kube: Kube, namespace: str, pods: list[dict]) -> dict[str, float]:
    """Creates pods one after another; returns each name's client clock before its request."""
    sent = {}
    for pod in pods:
        name = pod["metadata"]["name"]
        sent[name] = time.time()
        kube.request("POST", f"/api/v1/namespaces/{namespace}/pods", pod)
    return sent


def delete_all(kube: Kube, watcher: Watcher, namespace: str, selector: str, timeout_s: float) -> bool:
    """Deletes every pod of the label and waits (bounded) until the watch saw them all go.
    False (and a message) when they are not all gone in time or the request failed: the
    measurements stand either way."""
    started = time.time()
    try:
        kube.request("DELETE", f"/api/v1/namespaces/{namespace}/pods?labelSelector={urllib.parse.quote(selector)}",
                     timeout=timeout_s)
        if watcher.wait(lambda: not watcher.present, started + timeout_s):
            return True
    except Exception as e:  # noqa: BLE001 - reported, and the results are still written
        print(f"podlatency: deleting the pods of {selector} failed: {e}", file=sys.stderr)
    print(f"podlatency: {len(watcher.present)} pods of {selector} still exist after {time.time() - started:.0f}s",
          file=sys.stderr)
    return False


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100), as the Kubernetes SLO documents use."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def summarize(samples: list[dict]) -> dict:
    ok = [s for s in samples if s["outcome"] == "ok"]
    out = {"n": len(samples), "ok": len(ok),
           "failed": sum(s["outcome"] == "failed" for s in samples),
           "timed_out": sum(s["outcome"] == "timeout" for s in samples)}
    for key in ("latency_s", "sli_latency_s", "to_scheduled_s", "scheduled_to_observed_s"):
        values = [s[key] for s in ok if s.get(key) is not None]
        out[key] = {f"p{p}": percentile(values, p) for p in (50, 90, 99)}
        out[key]["max"] = max(values) if values else None
        out[key]["mean"] = sum(values) / len(values) if values else None
    return out


def sample(name: str, sent: float, seen: dict | None) -> dict:
    if seen is None:
        return {"name": name, "created_client": sent, "created_server": None, "observed": None,
                "latency_s": None, "sli_latency_s": None, "outcome": "timeout"}
    pod = seen["pod"]
    created = parse_time(pod["metadata"].get("creationTimestamp"))
    # When the scheduler bound it (whole seconds, as every condition's time): splits the
    # latency into the control plane's share and the node's.
    scheduled = next((parse_time(c.get("lastTransitionTime")) for c in pod.get("status", {}).get("conditions") or []
                      if c.get("type") == "PodScheduled" and c.get("status") == "True"), None)
    return {"name": name, "created_client": sent, "created_server": created, "observed": seen["observed"],
            "latency_s": round(seen["observed"] - sent, 4),
            "sli_latency_s": round(seen["observed"] - created, 4) if created else None,
            "scheduled_server": scheduled,
            "to_scheduled_s": round(scheduled - created, 3) if scheduled and created else None,
            "scheduled_to_observed_s": round(seen["observed"] - scheduled, 3) if scheduled else None,
            "outcome": seen["outcome"], "node": pod.get("spec", {}).get("nodeName")}


# ---- latency -------------------------------------------------------------------------------


def latency(args) -> dict:
    kube = Kube(args.kubeconfig)
    template = load_template(args)
    selector = f"{LABEL}={args.name}"
    watcher = Watcher(kube, args.namespace, selector, args.until)
    if watcher.present:
        sys.exit(f"podlatency: pods with label {selector} already exist in {args.namespace}; delete them first")
    samples, start = [], time.time()
    try:
        for first in range(0, args.count, args.batch):
            if time.time() - start > args.max_seconds:
                print(f"podlatency: stopping after {args.max_seconds}s (--max-seconds)", file=sys.stderr)
                break
            names = [f"{args.name}-{i:04d}" for i in range(first, min(first + args.batch, args.count))]
            sent = create_pods(kube, args.namespace, [pod_manifest(template, n, args.name) for n in names])
            watcher.wait(lambda: all(n in watcher.seen for n in names), time.time() + args.batch_timeout)
            with watcher.lock:
                batch = [sample(n, sent[n], watcher.seen.get(n)) for n in names]
            samples += batch
            lat = [s["latency_s"] for s in batch if s["latency_s"] is not None]
            print(f"podlatency: {args.name}: batch {first // args.batch + 1}: "
                  f"{sum(s['outcome'] == 'ok' for s in batch)}/{len(batch)} {args.until}, "
                  f"max {max(lat) if lat else float('nan'):.3f}s", file=sys.stderr)
            if args.pause:
                time.sleep(args.pause)
    finally:
        if not args.keep:
            delete_all(kube, watcher, args.namespace, selector, args.delete_timeout)
        watcher.close()
    return {"kind": "latency", "name": args.name, "until": args.until, "count": args.count, "batch": args.batch,
            "template": template, "wall_s": round(time.time() - start, 3),
            "summary": summarize(samples), "samples": samples}


# ---- density -------------------------------------------------------------------------------


def proc_sample(pid: int) -> dict | None:
    """RSS (KiB), CPU time (s), threads, open files and memory mappings of one process (the
    last two are what a process runs out of before memory: RLIMIT_NOFILE, vm.max_map_count)."""
    try:
        stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        status = open(f"/proc/{pid}/status").read()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    field = {line.split(":")[0]: line.split()[1] for line in status.splitlines() if len(line.split()) > 1}
    out = {"rss_kib": int(field.get("VmRSS", 0)), "vm_kib": int(field.get("VmSize", 0)),
           "threads": int(field.get("Threads", 0)), "cpu_s": (int(stat[11]) + int(stat[12])) / ticks}
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
        out["fds"] = len(fds)
        out["fd_kinds"] = fd_kinds(pid, fds)
        with open(f"/proc/{pid}/maps") as f:
            out["maps"] = sum(1 for _ in f)
    except OSError:
        pass
    return out


def fd_kinds(pid: int, fds: list[str]) -> dict[str, int]:
    """What a process's descriptors point at, counted: sockets, log files (*.log), directories
    under a pod's volumes/, compiled code (*.cwasm), anything else."""
    out: dict[str, int] = {}
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        kind = ("socket" if target.startswith("socket:") else "log file" if target.endswith(".log")
                else "pod volume directory" if "/volumes/" in target else "compiled code" if target.endswith(".cwasm")
                else "other")
        out[kind] = out.get(kind, 0) + 1
    return out


def api_requests(kube: Kube) -> dict[str, float] | None:
    """The API server's request counters (apiserver_request_total) summed by verb, resource and
    subresource, e.g. {"GET configmaps": 1234}; None when /metrics cannot be read."""
    try:
        conn = kube.connect(timeout=30)
        conn.request("GET", "/metrics", headers={k: v for k, v in kube.headers.items() if k != "Content-Type"})
        resp = conn.getresponse()
        text = resp.read().decode()
        conn.close()
        if resp.status != 200:
            return None
    except (OSError, http.client.HTTPException):
        return None
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels, _, value = line.rpartition(" ")
        fields = dict(kv.split("=", 1) for kv in labels[labels.index("{") + 1:-1].split(",") if "=" in kv)
        get = lambda k: fields.get(k, '""').strip('"')  # noqa: E731
        key = f"{get('verb')} {get('resource')}" + (f"/{get('subresource')}" if get("subresource") else "")
        out[key] = out.get(key, 0) + float(value)
    return out


def request_rates(before: dict | None, after: dict | None, seconds: float) -> dict[str, float]:
    """Requests per second by kind between two readings, the busiest first (at least 0.05/s)."""
    if not before or not after:
        return {}
    rates = {k: (v - before.get(k, 0)) / seconds for k, v in after.items()}
    return {k: round(v, 2) for k, v in sorted(rates.items(), key=lambda kv: -kv[1]) if v >= 0.05}


def mem_available_mib() -> int:
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return 0


def density_templates(args) -> list[dict]:
    """The --template (with --image) and each --also TEMPLATE=IMAGE: pods take them in turn."""
    templates = [load_template(args)]
    for also in args.also:
        path, _, image = also.partition("=")
        with open(path) as f:
            t = json.load(f)
        if image:
            for c in t["spec"]["containers"]:
                c["image"] = image
        templates.append(t)
    return templates


def density(args) -> dict:
    kube = Kube(args.kubeconfig)
    templates = density_templates(args)
    selector = f"{LABEL}={args.name}"
    pids = dict(p.split("=", 1) for p in args.pid)
    watcher = Watcher(kube, args.namespace, selector, "Running")
    if watcher.present:
        sys.exit(f"podlatency: pods with label {selector} already exist in {args.namespace}; delete them first")
    steps, gave_out, created = [], None, 0
    all_sent: dict[str, float] = {}
    before = {k: proc_sample(int(v)) for k, v in pids.items()}
    try:
        for total in args.steps:
            step_start = time.time()
            cpu0 = {k: proc_sample(int(v)) for k, v in pids.items()}
            new: list[str] = []
            while created < total and gave_out is None:
                names = [f"{args.name}-{i:05d}" for i in range(created, min(created + args.batch, total))]
                manifests = [pod_manifest(templates[int(n.rsplit("-", 1)[1]) % len(templates)], n, args.name)
                             for n in names]
                all_sent.update(create_pods(kube, args.namespace, manifests))
                new += names
                created += len(names)
                if mem_available_mib() < args.min_free_mib:
                    gave_out = f"machine memory: under {args.min_free_mib} MiB available at {created} pods created"
            names = list(all_sent)
            # Waited on in slices, so that a process gone (the agent crashed) ends the step early.
            deadline = step_start + args.step_timeout
            while True:
                all_running = watcher.wait(lambda: sum(n in watcher.seen for n in names) == len(names),
                                           min(deadline, time.time() + 5))
                if all_running or time.time() >= deadline:
                    break
                if any(proc_sample(int(v)) is None for v in pids.values()):
                    break
            elapsed = time.time() - step_start
            with watcher.lock:
                samples = [sample(n, all_sent[n], watcher.seen.get(n)) for n in names]
            new_set = set(new)
            now = {k: proc_sample(int(v)) for k, v in pids.items()}
            running = sum(s["outcome"] == "ok" for s in samples)
            failed = sum(s["outcome"] == "failed" for s in samples)
            procs = {}
            for k in pids:
                if now[k] is None:
                    procs[k] = {"alive": False}
                    continue
                base = before[k]["rss_kib"] if before.get(k) else 0
                procs[k] = {**now[k], "alive": True,
                            "rss_kib_per_pod": round((now[k]["rss_kib"] - base) / max(running, 1), 1),
                            "cpu_s_in_step": round(now[k]["cpu_s"] - cpu0[k]["cpu_s"], 2) if cpu0.get(k) else None}
            # Idle afterwards: CPU over a quiet window, the pods all in place (or given up on).
            quiet0 = {k: proc_sample(int(v)) for k, v in pids.items()}
            api0, t0 = api_requests(kube), time.time()
            time.sleep(args.idle_window)
            api1 = api_requests(kube)
            idle_requests = request_rates(api0, api1, time.time() - t0)
            quiet1 = {k: proc_sample(int(v)) for k, v in pids.items()}
            for k in pids:
                if quiet0.get(k) and quiet1.get(k) and procs[k]["alive"]:
                    procs[k]["idle_cpu_pct"] = round(100 * (quiet1[k]["cpu_s"] - quiet0[k]["cpu_s"]) / args.idle_window, 1)
            step = {"pods": total, "running": running, "failed": failed, "seconds": round(elapsed, 2),
                    "created": created, "before": before if not steps else None,
                    "idle_api_requests_per_s": idle_requests,
                    "mem_available_mib": mem_available_mib(), "processes": procs,
                    "not_running": watcher.states([n for n in names if n not in watcher.seen]),
                    **{k: v for k, v in summarize([s for s in samples if s["name"] in new_set]).items()
                       if k in ("latency_s", "to_scheduled_s", "scheduled_to_observed_s")}}
            steps.append(step)
            print(f"podlatency: density {args.name}: {running}/{total} Running after {elapsed:.1f}s, "
                  f"{failed} failed; {procs}", file=sys.stderr)
            dead = [k for k, p in procs.items() if not p["alive"]]
            if gave_out is None and dead:
                gave_out = f"process exited: {', '.join(dead)} at {total} pods"
            if gave_out is None and failed:
                gave_out = f"{failed} pods Failed at {total} pods"
            if gave_out is None and not all_running:
                gave_out = f"{total - running} of {total} pods not Running within {args.step_timeout}s"
            if gave_out:
                break
    finally:
        cleanup = {"deleted": None}
        if not args.keep:
            t0 = time.time()
            cleanup = {"deleted": delete_all(kube, watcher, args.namespace, selector, args.delete_timeout),
                       "seconds": round(time.time() - t0, 1), "left": len(watcher.present)}
        watcher.close()
    return {"kind": "density", "cleanup": cleanup, "name": args.name, "templates": templates, "steps": steps,
            "step_timeout_s": args.step_timeout, "batch": args.batch, "idle_window_s": args.idle_window,
            "gave_out": gave_out or f"nothing up to {args.steps[-1]} pods (the last step)"}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("latency", "density"):
        p = sub.add_parser(name)
        p.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"), required="KUBECONFIG" not in os.environ)
        p.add_argument("--template", required=True, help="a JSON Pod manifest without metadata.name")
        p.add_argument("--name", required=True, help="pod name prefix and the value of the wasmlet-bench label")
        p.add_argument("--namespace", default="default")
        p.add_argument("--image", help="replaces every container's image in the template")
        p.add_argument("--batch", type=int, default=10)
        p.add_argument("--delete-timeout", type=float, default=600)
        p.add_argument("--keep", action="store_true", help="leave the pods (default: delete them at the end)")
        p.add_argument("--out", required=True)
    lat = sub.choices["latency"]
    lat.add_argument("--until", choices=["Running", "Ready", "Succeeded"], default="Running")
    lat.add_argument("--count", type=int, default=50)
    lat.add_argument("--batch-timeout", type=float, default=120)
    lat.add_argument("--max-seconds", type=float, default=900, help="no new batch after this long")
    lat.add_argument("--pause", type=float, default=0, help="seconds between batches")
    den = sub.choices["density"]
    den.add_argument("--steps", type=lambda s: [int(x) for x in s.split(",")], default=[500, 1000, 2000, 5000])
    den.add_argument("--pid", action="append", default=[], help="NAME=PID of a process to sample (repeatable)")
    den.add_argument("--step-timeout", type=float, default=600)
    den.add_argument("--min-free-mib", type=int, default=2048)
    den.add_argument("--also", action="append", default=[],
                     help="TEMPLATE=IMAGE: another pod template; pods take the templates in turn (repeatable)")
    den.add_argument("--idle-window", type=float, default=30,
                     help="seconds of CPU and API request sampling after each step, the pods idle")
    args = ap.parse_args()
    result = latency(args) if args.cmd == "latency" else density(args)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    if args.cmd == "latency":
        s = result["summary"]
        print(f"podlatency: {args.name}: {s['ok']}/{s['n']} {args.until}; latency p50 {s['latency_s']['p50']} "
              f"p90 {s['latency_s']['p90']} p99 {s['latency_s']['p99']} s", file=sys.stderr)


if __name__ == "__main__":
    main()
