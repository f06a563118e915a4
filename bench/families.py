"""The generator families side by side: quality, speed and size of each shipped default, in one run.

    .venv/bin/python bench/families.py [-n 200] [--families vae,gan,ar] [--json FILE]

For each family prints ShapesEval per attribute and whole-prompt on ``n`` fresh prompts (the
evaluation seed, as ``loom eval shapes``), training time and steps (from the training record in
its config.json), per-image generation time (64 px, warm, batches of 32, text encoder included;
medians of 3 rounds interleaved across families so machine noise hits all alike) with the ratio
to the fastest, and the size of its weights. The output is a Markdown table (README's).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="fresh prompts for ShapesEval")
    parser.add_argument("--families", default="vae,gan,ar")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args()

    import torch

    import loom
    from loom.core import get_registry
    from loom.evaluation import evaluate_shapes

    families = []
    for name in args.families.split(","):
        folder = Path(get_registry().get(name).cls.default_weights)
        if not (folder / "model.safetensors").is_file():
            print(f"{name}: no shipped weights in {folder}; skipped")
            continue
        families.append((name, folder))

    rows = {}
    for name, folder in families:
        report = evaluate_shapes(name, n=args.n, progress=False).to_dict()
        training = json.loads((folder / "config.json").read_text()).get("training", {})
        rows[name] = {
            "eval": report,
            "train_minutes": training.get("minutes"),
            "train_steps": training.get("steps"),
            "weights_mb": (folder / "model.safetensors").stat().st_size / 1e6,
            "seconds_per_image": [],
        }

    prompts = [f"a small red circle in the top left on a blue background number {i}" for i in range(32)]
    pipelines = {name: loom.pipeline_for(loom.default_spec(name, size=None)) for name, _ in families}
    for p in pipelines.values():
        p.run(prompts[:8], seed=0, progress=False)  # warm up: weights loaded, first-call costs paid
    for _ in range(3):
        for name, p in pipelines.items():
            start = time.perf_counter()
            p.run(prompts, seed=1, progress=False)
            rows[name]["seconds_per_image"].append((time.perf_counter() - start) / len(prompts))

    fastest = min(statistics.median(r["seconds_per_image"]) for r in rows.values())
    attrs = list(next(iter(rows.values()))["eval"]["per_attribute"]) if rows else []
    print(f"ShapesEval on {args.n} fresh prompts; {torch.get_num_threads()} CPU threads, torch {torch.__version__}\n")
    print("| family | " + " | ".join(attrs) + " | whole prompt | training | per image (64 px) | weights |")
    print("|---|" + "---|" * len(attrs) + "---|---|---|---|")
    for name, r in rows.items():
        per = statistics.median(r["seconds_per_image"])
        cells = [f"{r['eval']['per_attribute'][a]:.3f}" for a in attrs]
        train = f"{r['train_minutes']:.0f} min, {r['train_steps']} steps" if r["train_minutes"] else "?"
        print(
            f"| {name} | " + " | ".join(cells) + f" | **{r['eval']['whole_prompt']:.3f}** | {train} "
            f"| {per * 1000:.1f} ms ({per / fastest:.1f}×) | {r['weights_mb']:.1f} MB |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
