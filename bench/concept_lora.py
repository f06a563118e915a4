"""A LoRA teaches the shipped Shapes diffusion model a concept it never saw (issue 34).

    python bench/concept_lora.py data star --out runs/star-data          # ≤ 64 captioned images
    loom train lora --base diffusion --data runs/star-data --out runs/lora-star ...
    python bench/concept_lora.py eval runs/lora-star [-n 100]            # the table per scale

``data`` writes ``-n`` images of the held-back concept (the Shapes world's star or pink, in a
stream no shipped model was trained on) with their captions, as any folder of captioned images
(metadata.jsonl). ``eval`` grades the base model and the adapter at each scale with ShapesEval:
prompts that feature the concept (templated, and phrased the way people type them), and the
world's own templated and underspecified prompts (what the adapter may cost the old concepts).
Chance is printed beside each split.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SCALES = (0.0, 0.25, 0.5, 0.75, 1.0)


def write_data(concept: str, n: int, out: Path, seed: int) -> None:
    from PIL import Image

    from loom.plugins.shapes.world import ConceptDataset

    out.mkdir(parents=True, exist_ok=True)
    data = ConceptDataset(concept, seed=seed)
    lines = []
    for i in range(n):
        item = data.item(i)
        name = f"{concept}-{i:03d}.png"
        Image.fromarray(item.image).save(out / name)
        lines.append(json.dumps({"file_name": name, "text": item.caption}))
    (out / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {n} images of {concept!r} with captions to {out}")


def splits(concept: str, n: int, seed: int) -> dict[str, list[str]]:
    """The prompts of each split: the concept's (templated, everyday) and the world's own."""
    from loom.evaluation import shapes_prompts
    from loom.plugins.shapes.world import sample_concept_prompts

    return {
        f"{concept} templated": [c for c, _ in sample_concept_prompts(n, concept, seed, "templated")],
        f"{concept} everyday": [c for c, _ in sample_concept_prompts(n, concept, seed, "underspecified")],
        "old templated": [c for c, _ in shapes_prompts(n, seed, "templated")],
        "old everyday": [c for c, _ in shapes_prompts(n, seed, "underspecified")],
    }


def evaluate(adapter: Path, concept: str, n: int, seed: int, scales: tuple[float, ...]) -> dict:
    """Whole-prompt rate (and chance) of each split at each scale; scale 0 runs the adapter at 0."""
    from loom.evaluation import evaluate_shapes

    prompts = splits(concept, n, seed)
    rows: dict = {"adapter": str(adapter), "concept": concept, "n": n, "prompt_seed": seed, "scales": {}}
    for scale in scales:
        options = {"adapters": [{"path": str(adapter), "scale": scale}]}
        row = {}
        for split, texts in prompts.items():
            report = evaluate_shapes("diffusion", texts, options=options, progress=False)
            row[split] = {
                "whole_prompt": report.whole_prompt,
                "chance": report.chance["whole_prompt"],
                "shape": report.per_attribute["shape"],
            }
        rows["scales"][str(scale)] = row
        print(f"scale {scale:4}: " + "  ".join(f"{k} {v['whole_prompt']:.3f}" for k, v in row.items()), flush=True)
    return rows


def table(rows: dict) -> str:
    """The README's table: one line per scale, each split's whole prompt, chance in the header."""
    first = next(iter(rows["scales"].values()))
    head = " | ".join(f"{k} (chance {v['chance']:.3f})" for k, v in first.items())
    lines = [f"| scale | {head} |", "|---" * (len(first) + 1) + "|"]
    for scale, row in rows["scales"].items():
        lines.append(f"| {scale} | " + " | ".join(f"{v['whole_prompt']:.3f}" for v in row.values()) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    data = sub.add_parser("data", help="write the concept's captioned images")
    data.add_argument("concept")
    data.add_argument("--out", type=Path, required=True)
    data.add_argument("-n", type=int, default=64)
    data.add_argument("--seed", type=int, default=0)
    grade = sub.add_parser("eval", help="grade the base and the adapter at each scale")
    grade.add_argument("adapter", type=Path)
    grade.add_argument("--concept", default="star")
    grade.add_argument("-n", type=int, default=100, help="prompts per split")
    grade.add_argument("--seed", type=int, default=1234, help="prompt seed")
    grade.add_argument("--scales", default=",".join(map(str, SCALES)))
    grade.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    if args.command == "data":
        write_data(args.concept, args.n, args.out, args.seed)
        return
    scales = tuple(float(s) for s in args.scales.split(","))
    rows = evaluate(args.adapter, args.concept, args.n, args.seed, scales)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
