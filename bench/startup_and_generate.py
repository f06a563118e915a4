"""Start-up and generation speed of the default chain, measured side by side in one run.

    .venv/bin/python bench/startup_and_generate.py [--repeats 5] [--against REV]

Prints: `loom --help` wall time against `python -c pass` (interleaved runs, medians, ratio);
cold `loom generate` (a fresh process: imports, model loads, one image, PNG write); and warm
per-image time for the default generator in one process, alone and in batches.

``--against REV`` compares this tree with the commit REV instead, side by side in one run: the same
`loom generate` start-up and warm per-image time, each measured on both trees in turn, with the
ratio (this tree / REV; below 1 is faster). REV's tree is laid out as installed (``loom`` → sdk/,
``loom.core`` → core/, ``loom.plugins`` → plugins/) under a temporary folder.
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


ROOT = Path(__file__).resolve().parents[1]
GENERATE = "import sys; from loom.cli import main; sys.argv[0] = 'loom'; main()"
WARM = """
import statistics, sys, time, loom
pipeline = loom.pipeline_for(loom.default_spec())
pipeline.run("warm up", seed=0, progress=False)
times = []
for i in range(int(sys.argv[1])):
    start = time.perf_counter()
    pipeline.run(f"a small red circle in the top left on a blue background {i}", seed=i, progress=False)
    times.append(time.perf_counter() - start)
print(statistics.median(times))
"""


def layout(rev: str, tmp: Path) -> Path:
    """Commit ``rev``'s tree laid out as the installed package, under ``tmp``; the folder to put on PYTHONPATH."""
    tree = tmp / "tree"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    package = tmp / "src" / "loom"
    package.mkdir(parents=True)
    for entry in (tree / "sdk").iterdir():
        (package / entry.name).symlink_to(entry)
    (package / "core").symlink_to(tree / "core")
    (package / "plugins").symlink_to(tree / "plugins")
    return tmp / "src"


def against(rev: str, repeats: int, env: dict) -> None:
    """`loom generate` start-up and warm per-image time of this tree against commit ``rev``, interleaved."""
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"this tree": env, rev: {**env, "PYTHONPATH": str(layout(rev, Path(tmp)))}}
        cold: dict[str, list[float]] = {name: [] for name in trees}
        warm: dict[str, list[float]] = {name: [] for name in trees}
        for i in range(repeats):
            for name, tree_env in trees.items():
                out = f"{tmp}/{i}-{len(cold[name])}.png"
                cold[name].append(
                    wall(
                        [sys.executable, "-c", GENERATE, "generate", "a red circle", "-o", out, "--seed", "1", "-q"],
                        tree_env,
                    )
                )
                res = subprocess.run(
                    [sys.executable, "-c", WARM, "8"], check=True, capture_output=True, text=True, env=tree_env
                )
                warm[name].append(float(res.stdout.strip().splitlines()[-1]))
    for label, runs, unit in (("cold loom generate", cold, "s"), ("warm, one image", warm, "ms")):
        scale = 1000 if unit == "ms" else 1
        medians = {name: statistics.median(t) for name, t in runs.items()}
        shown = ", ".join(f"{name} {m * scale:.3g} {unit}" for name, m in medians.items())
        print(f"{label:20s} {shown}; ratio {medians['this tree'] / medians[rev]:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--against", metavar="REV", help="compare with commit REV, side by side")
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if args.against:
        return against(args.against, args.repeats, env)
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
        cold = [
            wall(
                [
                    loom_cmd,
                    "generate",
                    "a red circle on a blue background",
                    "-o",
                    f"{tmp}/c{i}.png",
                    "--seed",
                    "1",
                    "-q",
                ],
                env,
            )
            for i in range(2)
        ]
    print(
        f"cold loom generate    {statistics.median(cold):7.2f} s    (fresh process, 1 image; runs: {', '.join(f'{c:.2f}' for c in cold)})"
    )

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
    print(
        f"warm, batch of 32     {batched * 1000:7.1f} ms / image   ({statistics.median(singles) / batched:.2f}× faster than one at a time)"
    )


if __name__ == "__main__":
    main()
