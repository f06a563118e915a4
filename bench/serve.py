"""``loom serve`` against ``loom.generate`` in-process, on the same prompts and seeds, in one run (issue 35).

    python bench/serve.py                               # 40 jobs, 4 clients
    python bench/serve.py --jobs 200 --clients 20       # the load test: every output checked exact
    python bench/serve.py --json bench/results/serve.json

In-process: one ``loom.generate(prompt, seed, generator=G, size=S, progress=callback)`` call per prompt, one after
another (after one warm-up call): time to first progress (the callback's first call) and time to result.
Service: ``loom serve --workers W`` on 127.0.0.1 (started and stopped here, a fresh --data), warmed by one job;
then ``--clients`` threads, each with its own HTTP client, submit their share of the jobs (one prompt each) and
follow each job's event stream: time to first progress (its first ``progress`` event) and time to result (its
PNG fetched), both from the POST. Throughput: jobs over the wall time of all of them. Every PNG the service made
is checked to hold the pixels ``loom.generate`` made for that prompt and seed; peak memory of each side is
printed (the server's VmHWM, this process's ru_maxrss).
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import statistics
import sys
import tempfile
import threading
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
    from loom.testing.server import LoomServer

    with tempfile.TemporaryDirectory(prefix="loom-bench-serve-") as tmp:
        server = LoomServer(Path(tmp) / "data", "--workers", str(workers), "--queue-limit", str(len(prompts) + 1))
        with server:
            warm = server.submit(prompt=prompts[0], seed=0, generator=generator, size=size)
            server.wait(warm, lambda job: job["status"] == "finished")
            ttfp: list = [None] * len(prompts)
            ttr: list = [None] * len(prompts)
            pngs: list = [None] * len(prompts)
            errors: list[str] = []

            def client_work(k: int) -> None:
                client = server.new_client()
                try:
                    for i in range(k, len(prompts), clients):
                        start = time.perf_counter()
                        job = server.submit(client, prompt=prompts[i], seed=i, generator=generator, size=size)
                        events = server.timed_events(job, client)
                        if events[-1][0] != "finished":
                            errors.append(f"job {i}: {events[-1]}")
                            continue
                        ttfp[i] = next(t for name, _, t in events if name == "progress") - start
                        pngs[i] = server.output(job, 1, client)
                        ttr[i] = time.perf_counter() - start
                except Exception as err:  # reported below, with the others
                    errors.append(f"client {k}: {err}")
                finally:
                    client.close()

            wall = time.perf_counter()
            threads = [threading.Thread(target=client_work, args=(k,)) for k in range(clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - wall
            peak = peak_rss_of(server.proc.pid)
        if errors:
            sys.exit("service run failed: " + "; ".join(errors[:5]))
    return {**summary(ttfp, ttr, wall), "clients": clients, "workers": workers, "peak_rss_mb": peak}, pngs


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
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1, help="the server's --workers")
    parser.add_argument("--generator", default="vae")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--json", type=Path, help="also write the results there")
    args = parser.parse_args()

    from loom.evaluation import shapes_prompts

    prompts = [caption for caption, _ in shapes_prompts(args.jobs, 2026, "underspecified")]
    local, images = in_process(prompts, args.generator, args.size)
    service, pngs = served(prompts, args.generator, args.size, args.clients, args.workers)
    same = exact(pngs, images)
    rows = {"in-process loom.generate": local, f"loom serve ({args.clients} clients)": service}
    print(f"{args.jobs} jobs of one {args.size} px image ({args.generator}), prompts phrased as people type them")
    keys = ["jobs_per_s", "first_progress_p50_ms", "first_progress_p95_ms", "result_p50_ms", "result_p95_ms"]
    print(f"{'':28}" + "".join(f"{k:>23}" for k in keys + ["peak_rss_mb"]))
    for name, row in rows.items():
        print(f"{name:28}" + "".join(f"{row[k]:>23}" for k in keys + ["peak_rss_mb"]))
    ratios = {k: round(service[k] / local[k], 2) for k in keys}
    print(f"{'ratio serve / in-process':28}" + "".join(f"{ratios[k]:>23}" for k in keys))
    print(f"outputs equal to loom.generate's pixels: {same}/{len(pngs)}")
    if args.json:
        report = {
            **rows,
            "ratio": ratios,
            "exact": f"{same}/{len(pngs)}",
            "args": vars(args) | {"json": str(args.json)},
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if same != len(pngs):
        sys.exit(f"{len(pngs) - same} outputs differ from loom.generate's")


if __name__ == "__main__":
    main()
