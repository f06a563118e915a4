"""Loom's overhead over raw diffusers, on the same tiny SD-shaped pipeline (built from configs in a
temporary folder: no download), same prompt, seed, scheduler and steps.

    OMP_NUM_THREADS=1 python bench/diffusion_overhead.py [--repeats 9] [--steps 10] [--size 64]

Runs are interleaved (raw, Loom, raw, Loom, ...) after a warm-up of each, so drifts in the
machine's speed hit both alike; prints each side's median, the ratio, and checks the images agree.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--scheduler", default="dpm++2m")
    args = parser.parse_args()

    import diffusers
    import torch
    from diffusers import StableDiffusionPipeline

    from loom.chains import Pipeline
    from loom.plugins.diffusion import SCHEDULERS
    from loom.plugins.diffusion.tiny import build_tiny_pipeline

    prompt, seed = "a photo of a cat", 5
    with tempfile.TemporaryDirectory(prefix="loom-bench-tiny-sd-") as folder:
        tokenizer = build_tiny_pipeline(folder)
        raw = StableDiffusionPipeline.from_pretrained(folder)
        cls_name, options = SCHEDULERS[args.scheduler]
        if cls_name:
            raw.scheduler = getattr(diffusers, cls_name).from_config(raw.scheduler.config, **options)
        raw.set_progress_bar_config(disable=True)
        loom = Pipeline.from_steps(
            (
                "stable-diffusion",
                {
                    "model": folder,
                    "scheduler": args.scheduler,
                    "steps": args.steps,
                    "width": args.size,
                    "height": args.size,
                },
            )
        ).load(progress=False)

        # Loom's own work is what a run takes outside the diffusers call it makes: timed directly,
        # it is free of the machine's run-to-run noise that the medians carry
        component = loom.components[0]
        inner: list[float] = []

        class Timed:
            def __init__(self, pipe):
                self.pipe = pipe

            def __getattr__(self, name):
                return getattr(self.pipe, name)

            def __call__(self, *a, **k):
                start = time.perf_counter()
                try:
                    return self.pipe(*a, **k)
                finally:
                    inner.append(time.perf_counter() - start)

        component.pipe = Timed(component.pipe)

        def run_raw():
            return raw(
                prompt,
                num_inference_steps=args.steps,
                width=args.size,
                height=args.size,
                generator=[torch.Generator().manual_seed(seed)],
                output_type="pt",
            ).images

        def run_loom():
            return loom.run(prompt, seed=seed, progress=False).output.pixels

        diff = float((run_raw() - run_loom()).abs().max())  # also the warm-up
        times = {"raw diffusers": [], "loom": []}
        inner.clear()
        for _ in range(args.repeats):
            for name, fn in (("raw diffusers", run_raw), ("loom", run_loom)):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)

    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"tiny SD pipeline ({tokenizer} tokenizer), {args.size}x{args.size}, {args.steps} steps, {args.scheduler}, "
        f"1 image, {args.repeats} interleaved repeats, torch {torch.__version__}, {torch.get_num_threads()} thread(s)"
    )
    for name, m in med.items():
        print(
            f"  {name:<14} median {m * 1000:8.1f} ms   (min {min(times[name]) * 1000:.1f}, max {max(times[name]) * 1000:.1f})"
        )
    ratio = med["loom"] / med["raw diffusers"]
    print(f"  ratio loom / raw diffusers: {ratio:.3f} ({(ratio - 1) * 100:+.1f}% overhead; goal ≤ +2%)")
    own = statistics.median(t - i for t, i in zip(times["loom"], inner))
    print(
        f"  Loom's own work per run (outside the diffusers call): median {own * 1000:.2f} ms "
        f"= {own / med['raw diffusers'] * 100:.2f}% of a raw run"
    )
    print(f"  max abs pixel difference: {diff:.2e}")
    if diff > 1e-4:
        sys.exit("Loom's image differs from diffusers' by more than 1e-4")


if __name__ == "__main__":
    main()
