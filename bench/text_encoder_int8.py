"""The packaged text encoder with int8 dynamic quantisation of its Linear layers, against float32, in one run.

    .venv/bin/python bench/text_encoder_int8.py [-n 100] [--generator vae]

Prints the encoder's warm per-prompt time at batch 32 both ways (interleaved rounds, medians, ratio), how far the
quantised token states and pooled vectors move (cosine similarity, worst over the batch), and ShapesEval's whole-prompt
rate of ``--generator``'s default chain on ``n`` validation prompts of each split with either encoder (the same prompts
and seeds: paired). ``torch.ao.quantization.quantize_dynamic`` needs no calibration and keeps weights in int8.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=100)
    parser.add_argument("--generator", default="vae")
    args = parser.parse_args()

    import torch

    from loom.core import Text
    from loom.evaluation import VALIDATION_SEED, evaluate_shapes, world_pipeline

    pipeline = world_pipeline("shapes", args.generator).load()
    encoder = next(c for c in pipeline.components if type(c).__name__ == "TextEncoder")
    fp32 = encoder.model
    int8 = torch.ao.quantization.quantize_dynamic(copy.deepcopy(fp32), {torch.nn.Linear}, dtype=torch.qint8)
    prompts = Text([f"a small red circle in the top left on a blue background number {i}" for i in range(32)])

    def run(model):
        encoder.model = model
        return encoder.run(prompts, [])

    times: dict[str, list[float]] = {"float32": [], "int8": []}
    for model in (fp32, int8):
        run(model)  # warm up
    for _ in range(5):
        for name, model in (("float32", fp32), ("int8", int8)):
            start = time.perf_counter()
            run(model)
            times[name].append((time.perf_counter() - start) / 32 * 1000)
    a, b = run(fp32), run(int8)
    cos = torch.nn.functional.cosine_similarity
    real = a.mask.bool()
    tokens = cos(a.tokens[real], b.tokens[real], dim=-1).min().item()
    pooled = cos(a.pooled, b.pooled, dim=-1).min().item()
    f, q = statistics.median(times["float32"]), statistics.median(times["int8"])
    print(
        f"text encoder, batch 32, {torch.get_num_threads()} threads: float32 {f:.2f} ms/prompt, int8 {q:.2f} ({q / f:.2f}×)"
    )
    print(f"worst cosine similarity to float32: token states {tokens:.4f}, pooled {pooled:.4f}")
    for split in ("templated", "underspecified"):
        scores = {}
        for name, model in (("float32", fp32), ("int8", int8)):
            encoder.model = model
            report = evaluate_shapes(
                args.generator, n=args.n, seed=VALIDATION_SEED, split=split, pipeline=pipeline, progress=False
            )
            scores[name] = report.whole_prompt
        print(
            f"{args.generator} {split} ({args.n} validation prompts): float32 {scores['float32']:.3f}, int8 {scores['int8']:.3f}"
        )


if __name__ == "__main__":
    main()
