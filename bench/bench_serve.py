"""Load on `medanomaly serve`, bounded and on 127.0.0.1 only: 0 errors expected.

(a) classification: a tiny 2D classifier trained here (compact CNN, 64 px, on the synthetic
    mammography phantom, 2 epochs: the numbers are of the SERVICE, not of the model) takes N
    requests (default 200) from C concurrent clients (default 8). A request is one 2D NIfTI upload
    (POST /v1/studies) followed by polling its job until done; latency is that whole round trip
    (upload + queue + dynamic batching + predict + outputs), and the POST alone is timed too.
(b) CT: M uploads (default 10) of the pyradiomics lung1 / lung2 CTs (NRRD, about 25 MB each) to
    the fixture lung detector (tests/fixtures/lung_detector, trained on synthetic nodules), queued
    at once; per-job server time and the throughput of the whole batch.

(c) with --explain METHOD: the same classification load on a second service started with ``serve --explain METHOD``
    (each call's map written beside it), in the same process after (a): the round trip and throughput ratios
    against (a) are printed (the cost of explaining every call).

The service runs in a subprocess (uvicorn, one worker thread per model) with --threads torch
threads. Prints p50 / p95 latency and throughput; --json writes them.

Usage: python bench/bench_serve.py [--requests 200] [--clients 8] [--cts 10] [--threads 2] [--explain gradcam]
       [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "lung_detector"
HOST = "127.0.0.1"  # never anything else: this bench loads a service it starts itself


def train_tiny_classifier(run: Path) -> Path:
    """Train a 2-epoch compact CNN on a small synthetic mammography phantom into ``run``."""
    from medanomaly.classify.config import ClassificationConfig
    from medanomaly.engine import train_run

    cfg = ClassificationConfig.model_validate({
        "task": "classification", "name": "bench_cls", "seed": 0,
        "data": {"dataset": {"name": "mammo_phantom", "params": {"n_patients": 40, "size": 64, "seed": 0,
                                                                   "split_fractions": [0.6, 0.2, 0.2]}},
                 "class_names": ["benign", "uncertain", "malignant"], "image_size": [64, 64], "channels": 1},
        "model": {"name": "compact_cnn", "params": {"widths": [8, 16], "hidden": 8, "dropout": 0.0}},
        "train": {"epochs": 2, "batch_size": 16, "lr": 0.002},
        "evaluate": {"n_bootstrap": 20, "calibrate": False},
    })  # fmt: skip
    return Path(train_run(cfg, run))


def fixture_detector(run: Path) -> Path:
    """The committed fixture lung detector (a finished run folder) copied to ``run``."""
    return Path(shutil.copytree(FIXTURE, run))


def start_service(runs: list[Path], tmp: Path, threads: int, *options: str) -> tuple[subprocess.Popen, str, str]:
    """``medanomaly serve`` (with ``options``) on a free 127.0.0.1 port: (process, base URL, token)."""
    import httpx

    from medanomaly.deploy.service.tokens import new_token

    tmp.mkdir(parents=True, exist_ok=True)
    token = new_token(tmp / "tokens.json")
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "medanomaly.cli.app", "serve", *map(str, runs), "--host", HOST, "--port", str(port),
           "--tokens", str(tmp / "tokens.json"), "--data", str(tmp / "data"), "--queue-size", "64", *options]  # fmt: skip
    with open(tmp / "serve.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://{HOST}:{port}"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        try:
            if httpx.get(base + "/docs", timeout=2).status_code == 200:
                return proc, base, token
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("the service did not start:\n" + (tmp / "serve.log").read_text()[-2000:])


def one_request(client, model: str, data: bytes, name: str, timeout: float) -> tuple[float, float, str]:
    """Upload one file and poll its job: (POST seconds, round-trip seconds, final status or error)."""
    t0 = time.perf_counter()
    r = client.post(f"/v1/studies?model={model}", files=[("files", (name, data))])
    t_post = time.perf_counter() - t0
    if r.status_code != 202:
        return t_post, time.perf_counter() - t0, f"HTTP {r.status_code}: {r.text[:120]}"
    job_id = r.json()["job_id"]
    while time.perf_counter() - t0 < timeout:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("done", "failed"):
            return t_post, time.perf_counter() - t0, job["status"] + (f": {job['reason']}" if job["reason"] else "")
        time.sleep(0.02)
    return t_post, time.perf_counter() - t0, "timeout"


def run_load(base: str, token: str, model: str, payloads: list[tuple[str, bytes]], clients: int,
             timeout: float) -> dict:  # fmt: skip
    """Send every payload from ``clients`` concurrent clients; latency percentiles and throughput."""
    import httpx

    pools = [httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)
             for _ in range(clients)]  # fmt: skip
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as ex:
        out = list(ex.map(lambda i: one_request(pools[i % clients], model, payloads[i][1], payloads[i][0], timeout),
                          range(len(payloads))))  # fmt: skip
    wall = time.perf_counter() - start
    for c in pools:
        c.close()
    posts, trips, status = (np.array([o[0] for o in out]), np.array([o[1] for o in out]), [o[2] for o in out])
    errors = [s for s in status if s != "done"]
    return {"n": len(out), "clients": clients, "errors": len(errors), "error_examples": errors[:3],
            "post_p50_ms": round(float(np.percentile(posts, 50)) * 1e3, 1),
            "post_p95_ms": round(float(np.percentile(posts, 95)) * 1e3, 1),
            "roundtrip_p50_s": round(float(np.percentile(trips, 50)), 3),
            "roundtrip_p95_s": round(float(np.percentile(trips, 95)), 3),
            "wall_s": round(wall, 2), "throughput_per_s": round(len(out) / wall, 3)}  # fmt: skip


def nifti_2d(tmp: Path, n: int) -> list[tuple[str, bytes]]:
    """``n`` distinct 2D NIfTI images (64 x 64, float32) as upload payloads."""
    from medanomaly.io import write
    from medanomaly.types import Volume

    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        path = write(Volume(rng.random((1, 64, 64), dtype=np.float32), spacing=(0.1, 0.1, 1.0)), tmp / f"c{i}.nii.gz")
        out.append((f"img{i}.nii.gz", Path(path).read_bytes()))
    return out


def service_rss_mib(pid: int) -> int | None:
    """The service process's resident memory (MiB, Linux ``VmRSS``); None where it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200, choices=range(1, 1001), metavar="N")
    ap.add_argument("--clients", type=int, default=8, choices=range(1, 33), metavar="C")
    ap.add_argument("--cts", type=int, default=10, choices=range(0, 21), metavar="M")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the service")
    ap.add_argument("--explain", default=None, help="also load a service explaining each call with this method")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from medanomaly.data.sources import pyradiomics_case

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as d:
        tmp = Path(d)
        t = time.perf_counter()
        cls = train_tiny_classifier(tmp / "cls")
        print(f"tiny classifier trained in {time.perf_counter() - t:.1f} s (synthetic phantom; service speed only)")
        runs = [cls, fixture_detector(tmp / "lung")] if args.cts else [cls]
        proc, base, token = start_service(runs, tmp, args.threads)
        try:
            images = nifti_2d(tmp, args.requests)
            run_load(base, token, "cls", images[:50], args.clients, 120)  # warm-up: imports, first batches
            rss_before = service_rss_mib(proc.pid)
            results = {"classification": run_load(base, token, "cls", images, args.clients, 120)}
            results["classification"]["service_rss_mib"] = [rss_before, service_rss_mib(proc.pid)]
            print("classification:", json.dumps(results["classification"]))
            print(f"service memory: {rss_before} MiB after 50 warm-up studies, "
                  f"{results['classification']['service_rss_mib'][1]} MiB after {args.requests} more")
            if args.cts:
                cts = [pyradiomics_case(c)[0] for c in ("lung1", "lung2")]
                payloads = [(f"ct{i}.nrrd", cts[i % 2].read_bytes()) for i in range(args.cts)]
                results["ct"] = run_load(base, token, "lung", payloads, args.cts, 1800)
                print("ct:", json.dumps(results["ct"]))
        finally:
            stop_service(proc)
        if args.explain:
            results["classification_explained"] = explained_load(cls, tmp / "explain", images, args)
            base_trip = results["classification"]["roundtrip_p50_s"]
            ratio = results["classification_explained"]["roundtrip_p50_s"] / base_trip
            slower = results["classification"]["throughput_per_s"] / results["classification_explained"]["throughput_per_s"]
            print(f"explained ({args.explain}):", json.dumps(results["classification_explained"]))
            print(f"explaining each call: round trip p50 x{ratio:.2f}, throughput / {slower:.2f} (same process, "
                  f"same images, after the plain run)")  # fmt: skip
        results["threads"], results["cpus"] = args.threads, os.cpu_count()
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        errors = sum(r["errors"] for r in results.values() if isinstance(r, dict))
        print(f"errors: {errors}")
        raise SystemExit(1 if errors else 0)


def explained_load(cls: Path, tmp: Path, images: list[tuple[str, bytes]], args: argparse.Namespace) -> dict:
    """The classification load on a service started with ``--explain``; every job must carry its map."""
    import httpx

    proc, base, token = start_service([cls], tmp, args.threads, "--explain", args.explain)
    try:
        run_load(base, token, "cls", images[:50], args.clients, 120)  # warm-up, as for the plain run
        result = run_load(base, token, "cls", images, args.clients, 120)
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as client:
            job = client.get("/v1/jobs").json()[0]
            explanation = client.get(f"/v1/studies/{job['id']}/results").json().get("explanation", {})
        if explanation.get("method") != args.explain or "error" in explanation:
            result["errors"] += 1
            result["error_examples"].append(f"no map: {explanation}")
        return result
    finally:
        stop_service(proc)


def stop_service(proc: subprocess.Popen) -> None:
    """Stop a service this bench started (killed when it does not stop within 60 s)."""
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


if __name__ == "__main__":
    main()
