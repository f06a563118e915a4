"""The text-to-sound families side by side: quality, speed and size of each shipped default, in one run.

    .venv/bin/python bench/sound_families.py [-n 200] [--families vae-sound,gan-sound] [--json FILE]

For each family prints SoundsEval per attribute and whole caption on ``n`` fresh captions (the
evaluation seed, as ``loom eval sounds``) with the chance rate of each beside it, training time
and steps (from the training record in its config.json), warm per-clip generation time (1.5 s
clips at 16 kHz, batches of 16, text encoder and Griffin-Lim included; medians of 3 rounds
interleaved across families so machine noise hits all alike) with its ratio to real time, and the
size of its weights. The output is a Markdown table (README's).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="fresh captions for SoundsEval")
    parser.add_argument("--families", default="vae-sound,gan-sound")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args()

    import torch

    import loom
    from loom.core import get_registry
    from loom.evaluation import evaluate_sounds

    families = []
    for name in args.families.split(","):
        folder = Path(get_registry().get(name).cls.default_weights)
        if not (folder / "model.safetensors").is_file():
            print(f"{name}: no shipped weights in {folder}; skipped")
            continue
        families.append((name, folder))

    rows = {}
    for name, folder in families:
        report = evaluate_sounds(name, n=args.n, progress=False).to_dict()
        training = json.loads((folder / "config.json").read_text()).get("training", {})
        rows[name] = {
            "eval": report,
            "train_minutes": training.get("minutes"),
            "train_steps": training.get("steps"),
            "weights_mb": (folder / "model.safetensors").stat().st_size / 1e6,
            "seconds_per_clip": [],
        }

    prompts = [f"three rising high beeps, take {i}" for i in range(16)]
    pipelines = {name: loom.pipeline_for(loom.default_spec(name, size=None)) for name, _ in families}
    clip_seconds = None
    for p in pipelines.values():
        out = p.run(prompts[:4], seed=0, progress=False).output  # warm up: weights loaded, first-call costs paid
        clip_seconds = out.waveforms.shape[-1] / out.sample_rate
    for _ in range(3):
        for name, p in pipelines.items():
            start = time.perf_counter()
            p.run(prompts, seed=1, progress=False)
            rows[name]["seconds_per_clip"].append((time.perf_counter() - start) / len(prompts))

    attrs = list(next(iter(rows.values()))["eval"]["per_attribute"]) if rows else []
    chance = next(iter(rows.values()))["eval"].get("chance", {}) if rows else {}
    print(f"SoundsEval on {args.n} fresh captions; {torch.get_num_threads()} CPU threads, torch {torch.__version__}\n")
    print("| family | " + " | ".join(attrs) + " | whole caption | training | per clip (1.5 s) | weights |")
    print("|---|" + "---|" * len(attrs) + "---|---|---|---|")
    for name, r in rows.items():
        per = statistics.median(r["seconds_per_clip"])
        cells = [f"{r['eval']['per_attribute'][a]:.3f}" for a in attrs]
        train = f"{r['train_minutes']:.0f} min, {r['train_steps']} steps" if r["train_minutes"] else "?"
        print(
            f"| {name} | " + " | ".join(cells) + f" | **{r['eval']['whole_prompt']:.3f}** | {train} "
            f"| {per * 1000:.0f} ms ({per / clip_seconds:.3f}× real time) | {r['weights_mb']:.1f} MB |"
        )
    if chance:
        cells = [f"{chance[a]:.3f}" if a in chance else "" for a in attrs]
        print("| chance | " + " | ".join(cells) + f" | {chance.get('whole_prompt', float('nan')):.4f} | | | |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
