"""``loom serve`` against ``loom.generate`` in-process, on the same prompts and seeds, in one run (issue 35).

    python bench/serve.py                               # 40 jobs, from 1 client, then from 4 at once
    python bench/serve.py --jobs 200 --clients 20       # the load test: every output checked exact
    python bench/serve.py --json bench/results/serve.json

In-process: one ``loom.generate(prompt, seed, generator=G, size=S, progress=callback)`` call per prompt, one after
another (after one warm-up call): time to first progress (the callback's first call: the run has started) and
time to result. Service, for each number in ``--clients``: ``loom serve --workers W`` on 127.0.0.1 (started and
stopped here, a fresh --data), warmed by one job; then that many threads, each with its own HTTP client, submit
their share of the jobs (one prompt each) and follow each job's event stream: time to first progress (its first
``progress`` event: the job has started, after any wait in the queue) and time to result (its PNG fetched), both
from the POST. With one client a call is compared with a call; with more, jobs wait for each other in the queue.
Throughput: jobs over the wall time of all of them. Every PNG the service made is checked to hold the pixels
``loom.generate`` made for that prompt and seed; peak memory of each side is printed (the server's VmHWM, this
process's ru_maxrss).
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(ttfp: list[float], ttr: list[float], wall: float) -> dict:
    return {
        "jobs": len(ttr),
        "jobs_per_s": round(len(ttr) / wall, 2),
        "first_progress_p50_ms": round(1000 * percentile(ttfp, 0.5), 1),
        "first_progress_p95_ms": round(1000 * percentile(ttfp, 0.95), 1),
        "result_p50_ms": round(1000 * percentile(ttr, 0.5), 1),
        "result_p95_ms": round(1000 * percentile(ttr, 0.95), 1),
        "result_mean_ms": round(1000 * statistics.fmean(ttr), 1),
    }


def in_process(prompts: list[str], generator: str, size: int) -> tuple[dict, list]:
    """Each prompt through loom.generate (seed = its index), timed; the summary and the images."""
    import numpy as np

    import loom

    loom.generate(prompts[0], 0, generator=generator, size=size, progress=False)  # loads the weights
    ttfp, ttr, images = [], [], []
    wall = time.perf_counter()
    for seed, prompt in enumerate(prompts):
        first: list[float] = []
        start = time.perf_counter()
        result = loom.generate(
            prompt, seed, generator=generator, size=size, progress=lambda *_: first or first.append(time.perf_counter())
        )
        ttr.append(time.perf_counter() - start)
        ttfp.append(first[0] - start)
        images.append(np.asarray(result.output.to_numpy()[0]))
    return {**summary(ttfp, ttr, time.perf_counter() - wall), "peak_rss_mb": peak_rss_self()}, images


def served(prompts: list[str], generator: str, size: int, clients: int, workers: int) -> tuple[dict, list]:
    """Each prompt as one job of ``loom serve`` from ``clients`` threads; the summary and each job's PNG."""
    from loom.testing.server import LoomServer, run_jobs

    bodies = [{"prompt": p, "seed": i, "generator": generator, "size": size} for i, p in enumerate(prompts)]
    with tempfile.TemporaryDirectory(prefix="loom-bench-serve-") as tmp:
        with LoomServer(
            Path(tmp) / "data", "--workers", str(workers), "--queue-limit", str(len(prompts) + 1)
        ) as server:
            run_jobs(server, bodies[:1], 1)  # loads the weights
            wall = time.perf_counter()
            runs = run_jobs(server, bodies, clients)
            wall = time.perf_counter() - wall
            peak = peak_rss_of(server.proc.pid)
    failed = [f"job {i}: {run.error}" for i, run in enumerate(runs) if run.error]
    if failed:
        sys.exit(f"{len(failed)} jobs failed: " + "; ".join(failed[:5]))
    ttfp, ttr = [r.first_progress_s for r in runs], [r.result_s for r in runs]
    return {**summary(ttfp, ttr, wall), "clients": clients, "workers": workers, "peak_rss_mb": peak}, [
        r.png for r in runs
    ]


def peak_rss_self() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def peak_rss_of(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def exact(pngs: list[bytes], images: list) -> int:
    """How many of the service's PNGs hold the in-process image's pixels."""
    import numpy as np
    from PIL import Image

    same = 0
    for png, image in zip(pngs, images):
        with Image.open(io.BytesIO(png)) as made:
            same += bool(np.array_equal(np.asarray(made), image))
    return same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--clients", default="1,4", help="comma-separated: one service run per number")
    parser.add_argument("--workers", type=int, default=1, help="the server's --workers")
    parser.add_argument("--generator", default="vae")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--json", type=Path, help="also write the results there")
    args = parser.parse_args()

    from loom.evaluation import shapes_prompts

    prompts = [caption for caption, _ in shapes_prompts(args.jobs, 2026, "underspecified")]
    local, images = in_process(prompts, args.generator, args.size)
    rows, same = {"in-process loom.generate": local}, {}
    for clients in [int(c) for c in args.clients.split(",")]:
        name = f"loom serve, {clients} client{'s' if clients > 1 else ''}"
        rows[name], pngs = served(prompts, args.generator, args.size, clients, args.workers)
        same[name] = exact(pngs, images)
    print(f"{args.jobs} jobs of one {args.size} px image ({args.generator}), prompts phrased as people type them")
    keys = ["jobs_per_s", "first_progress_p50_ms", "first_progress_p95_ms", "result_p50_ms", "result_p95_ms"]
    print(f"{'':28}" + "".join(f"{k:>23}" for k in keys + ["peak_rss_mb"]))
    for name, row in rows.items():
        print(f"{name:28}" + "".join(f"{row[k]:>23}" for k in keys + ["peak_rss_mb"]))
    ratios = {name: {k: round(row[k] / local[k], 2) for k in keys} for name, row in list(rows.items())[1:]}
    for name, ratio in ratios.items():
        print(f"{'ratio to in-process':28}" + "".join(f"{ratio[k]:>23}" for k in keys) + f"   ({name})")
    for name, n in same.items():
        print(f"{name}: outputs equal to loom.generate's pixels {n}/{args.jobs}")
    if args.json:
        report = {**rows, "ratio": ratios, "exact": same, "args": vars(args) | {"json": str(args.json)}}
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if any(n != args.jobs for n in same.values()):
        sys.exit("some outputs differ from loom.generate's")


if __name__ == "__main__":
    main()
