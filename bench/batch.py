"""Batch jobs: the local engine against Ray with 2 workers on this machine, measured in one run.

    .venv/bin/python bench/batch.py [--items 256] [--batch-size 32] [--workers 2]

Each engine runs the same job (the default chain, ``--items`` Shapes prompts, fresh output
folder) as ``loom batch`` in a fresh process, so imports, model loads and Ray's start-up count as
a user would see them. Printed per engine: images/s over the whole command and after the first
output, time to first output (from the command's start), wall time, and the peak memory of the
command with every process it started (Ray's head, raylet and workers included), as the sum of
their proportional set sizes (PSS, so shared pages count once). Both get the same CPUs: the local
process runs ``--workers`` torch threads, Ray ``--workers`` workers of one thread. Ray runs on
127.0.0.1 only.
Needs Ray (``pip install 'loom[ray]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white"]
SHAPES = ["circle", "square", "triangle"]
PLACES = ["in the top left", "in the center", "at the bottom", "on the right", "in the bottom left"]
BACKGROUNDS = ["black", "gray", "blue", "white", "green"]


def prompts(n: int) -> list[str]:
    return [
        f"a {'small' if k % 2 else 'large'} {COLOURS[k % 7]} {SHAPES[k % 3]} {PLACES[k % 5]} on a {BACKGROUNDS[(k // 5) % 5]} background"
        for k in range(n)
    ]


def tree(root: int) -> list[int]:
    from loom.batch_ray import descendants

    return [root, *descendants(root)]


def pss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_engine(engine: str, prompts_file: Path, out: Path, args) -> dict:
    loom_cmd = shutil.which("loom", path=str(Path(sys.executable).parent)) or "loom"
    cmd = [
        loom_cmd,
        "batch",
        "vae",
        "--prompts",
        str(prompts_file),
        "-o",
        str(out),
        "--batch-size",
        str(args.batch_size),
        "-q",
    ]
    if engine == "ray":
        cmd += ["--engine", "ray", "--workers", str(args.workers)]  # 1 CPU and 1 torch thread each
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        # the same CPU budget for both: the local process gets as many torch threads as Ray has workers
        "OMP_NUM_THREADS": str(args.workers if engine == "local" else 1),
        # Ray on loopback only, no auth token file, no usage stats (see shared/ENVIRONMENT.md)
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    peak, first_seen, stop = [0], [None], threading.Event()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], sum(pss_bytes(p) for p in tree(proc.pid)))
            if first_seen[0] is None and any(out.glob("*.png")):
                first_seen[0] = time.perf_counter() - start
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - start
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{engine}: loom batch failed ({proc.returncode}):\n{stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    done = sorted(r["timings"]["done_s"] for r in rows if r["status"] == "ok")
    steady = (len(done) - 1) / (done[-1] - done[0]) if len(done) > 1 and done[-1] > done[0] else float("nan")
    return {
        "engine": f"local, {args.workers} torch threads"
        if engine == "local"
        else f"ray, {args.workers} workers × 1 thread",
        "images": len(done),
        "wall_s": wall,
        "images_per_s": len(done) / wall,
        "images_per_s_after_first": steady,
        "first_output_s": first_seen[0],
        "peak_memory_mib": peak[0] / 2**20,
        "summary": stdout.strip().splitlines()[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    try:
        import ray  # noqa: F401
    except ImportError:
        raise SystemExit("this bench needs Ray: pip install 'loom[ray]'") from None
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        prompts_file = Path(tmp) / "prompts.txt"
        prompts_file.write_text("\n".join(prompts(args.items)) + "\n")
        for engine in ("local", "ray"):
            results.append(run_engine(engine, prompts_file, Path(tmp) / engine, args))
            print(f"{engine}: {results[-1]['summary']}", flush=True)
        same = all(
            (Path(tmp) / "local" / p.name).read_bytes() == p.read_bytes() for p in (Path(tmp) / "ray").glob("*.png")
        )
    print(
        f"\n{args.items} items, default chain (text-encoder → vae → 256 px), batch size {args.batch_size}, "
        f"{os.cpu_count()} CPUs; outputs byte-identical across engines: {same}\n"
    )
    print(
        "| engine | images/s (whole command) | images/s after first output | time to first output | wall time | peak memory (PSS, all processes) |"
    )
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['engine']} | {r['images_per_s']:.1f} | {r['images_per_s_after_first']:.1f} | {r['first_output_s']:.1f} s "
            f"| {r['wall_s']:.1f} s | {r['peak_memory_mib']:.0f} MiB |"
        )


if __name__ == "__main__":
    main()
