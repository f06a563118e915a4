"""Start-up and generation speed of the default chain, measured side by side in one run.

    .venv/bin/python bench/startup_and_generate.py [--repeats 5]

Prints: `loom --help` wall time against `python -c pass` (interleaved runs, medians, ratio);
cold `loom generate` (a fresh process: imports, model loads, one image, PNG write); and warm
per-image time for the default generator in one process, alone and in batches.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def wall(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    loom_cmd = shutil.which("loom", path=str(Path(sys.executable).parent)) or "loom"

    pass_t, help_t, plugins_t = [], [], []
    for _ in range(args.repeats):  # interleaved, so machine noise hits all three alike
        pass_t.append(wall([sys.executable, "-c", "pass"], env))
        help_t.append(wall([loom_cmd, "--help"], env))
        plugins_t.append(wall([loom_cmd, "plugins"], env))
    p, h, pl = statistics.median(pass_t), statistics.median(help_t), statistics.median(plugins_t)
    print(f"python -c pass        {p * 1000:7.0f} ms")
    print(f"loom --help           {h * 1000:7.0f} ms   ({h / p:.2f}× python -c pass)")
    print(f"loom plugins          {pl * 1000:7.0f} ms   ({pl / p:.2f}× python -c pass)")

    with tempfile.TemporaryDirectory() as tmp:
        cold = [wall([loom_cmd, "generate", "a red circle on a blue background", "-o", f"{tmp}/c{i}.png", "--seed", "1", "-q"], env) for i in range(2)]
    print(f"cold loom generate    {statistics.median(cold):7.2f} s    (fresh process, 1 image; runs: {', '.join(f'{c:.2f}' for c in cold)})")

    import loom

    pipeline = loom.pipeline_for(loom.default_spec())
    pipeline.run("warm up", seed=0, progress=False)
    prompts = [f"a small red circle in the top left on a blue background {i}" for i in range(32)]
    singles = []
    for i in range(8):
        start = time.perf_counter()
        pipeline.run(prompts[i], seed=i, progress=False)
        singles.append(time.perf_counter() - start)
    start = time.perf_counter()
    pipeline.run(prompts, seed=0, progress=False)
    batched = (time.perf_counter() - start) / len(prompts)
    print(f"warm, one at a time   {statistics.median(singles) * 1000:7.1f} ms / image")
    print(f"warm, batch of 32     {batched * 1000:7.1f} ms / image   ({statistics.median(singles) / batched:.2f}× faster than one at a time)")


if __name__ == "__main__":
    main()
