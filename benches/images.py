#!/usr/bin/env python3
"""Writes the benchmark's container images as OCI image layout tars for `ctr images import`.

Each image is FROM-scratch style: one uncompressed tar layer with the given files, an image
config (linux/amd64) with an entrypoint and cmd, named by `io.containerd.image.name`.

  images.py OUT_DIR PAUSE_NAME HELLO_WASM SLEEP_WASM
writes into OUT_DIR: pause.tar (busybox `sleep`: the CRI sandbox image, runnable by runc),
wasm-hello.tar (/hello.wasm), wasm-sleep.tar (/sleep.wasm 3600000), busybox.tar (/bin/busybox;
pods give the command), and prints the image names as `key=name` lines.
"""

import hashlib
import io
import json
import os
import sys
import tarfile


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _add(tar: tarfile.TarFile, path: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(path.lstrip("/"))
    info.size, info.mode, info.mtime = len(data), mode, 0
    tar.addfile(info, io.BytesIO(data))


def _descriptor(media_type: str, blob: bytes) -> dict:
    return {"mediaType": media_type, "digest": "sha256:" + _sha(blob), "size": len(blob)}


def image_tar(path: str, name: str, files: list, entrypoint: list, cmd: list) -> None:
    """files: (path in the image, bytes, mode)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as layer_tar:
        for fpath, data, mode in files:
            _add(layer_tar, fpath, data, mode)
    layer = buf.getvalue()
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": entrypoint, "Cmd": cmd, "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + _sha(layer)]},
    }).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": _descriptor("application/vnd.oci.image.config.v1+json", config),
        "layers": [_descriptor("application/vnd.oci.image.layer.v1.tar", layer)],
    }).encode()
    desc = _descriptor("application/vnd.oci.image.manifest.v1+json", manifest)
    desc["platform"] = {"architecture": "amd64", "os": "linux"}
    desc["annotations"] = {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "latest"}
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": [desc]}).encode()
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as out:
        _add(out, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        _add(out, "index.json", index)
        for blob in (layer, config, manifest):
            _add(out, "blobs/sha256/" + _sha(blob), blob)


def main() -> None:
    out, pause_name, hello_wasm, sleep_wasm = sys.argv[1:5]
    busybox = open("/bin/busybox", "rb").read()
    images = {
        "pause": (pause_name, [("/bin/busybox", busybox, 0o755)], ["/bin/busybox", "sleep", "2147483647"], []),
        "wasm-hello": ("localhost/wasmlet-bench/hello:v1",
                       [("/hello.wasm", open(hello_wasm, "rb").read(), 0o755)], [], ["/hello.wasm"]),
        "wasm-sleep": ("localhost/wasmlet-bench/sleep:v1",
                       [("/sleep.wasm", open(sleep_wasm, "rb").read(), 0o755)], [], ["/sleep.wasm", "3600000"]),
        "busybox": ("localhost/wasmlet-bench/busybox:v1", [("/bin/busybox", busybox, 0o755)], ["/bin/busybox"], []),
    }
    os.makedirs(out, exist_ok=True)
    for key, (name, files, entrypoint, cmd) in images.items():
        image_tar(os.path.join(out, key + ".tar"), name, files, entrypoint, cmd)
        print(f"{key}={name}")


if __name__ == "__main__":
    main()
