"""The generator families side by side: quality, speed and size of each shipped default, in one run.

    .venv/bin/python bench/families.py [--world shapes|sounds] [-n 200] [--families ...] [--json FILE]
    .venv/bin/python bench/families.py --families 'vae,diffusion{"steps": 2},diffusion-fast{"steps": 1}'

For each family prints the world's report (as ``loom eval shapes|sounds``, the evaluation seed):
whole prompt on ``n`` templated and ``n`` underspecified prompts, each with its seen and unseen
combinations (and for Shapes its one- and two-object prompts), the diversity of what prompts
leave open, chance beside each; then per attribute on the templated prompts; training time and steps (from the training
record in its config.json, added up over the runs a fine-tuned model started from), warm
generation time per output (text encoder included; medians of 3 rounds interleaved across
families so machine noise hits all alike) and the size of its weights. A family with a prompt
completion (``Generator.prompt_completion``) gets a second row, ``NAME, as typed``: the model on the
prompts as typed, without it.
A family may carry config options as JSON (``diffusion{"steps": 2}``): a row of its own, measured
as the others are (through the prompt completion only).
The output is a Markdown table (README's).

- ``--world shapes`` (default: vae, gan, ar, diffusion): ShapesEval; 64 px images in batches of 32, time with
  its ratio to the fastest family.
- ``--world sounds`` (default: vae-sound, gan-sound): SoundsEval with the chance rate of each
  attribute beside it; 1.5 s, 16 kHz clips in batches of 16, Griffin-Lim included, time with its
  ratio to real time.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from pathlib import Path

WORLDS = {
    "shapes": {
        "families": "vae,gan,ar,diffusion",
        "batch": 32,
        "what": "prompt",
        "output": "per image (64 px)",
        "prompt": "a small red circle in the top left on a blue background number {i}",
    },
    "sounds": {
        "families": "vae-sound,gan-sound",
        "batch": 16,
        "what": "caption",
        "output": "per clip (1.5 s)",
        "prompt": "three rising high beeps, take {i}",
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", choices=sorted(WORLDS), default="shapes")
    parser.add_argument("-n", type=int, default=200, help="fresh prompts for the world's checker")
    parser.add_argument("--families", default=None, help="comma-separated (default: the world's shipped families)")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args()
    world = WORLDS[args.world]

    import torch

    import loom
    from loom.core import get_registry
    from loom.evaluation import shapes_report, sounds_report

    evaluate = sounds_report if args.world == "sounds" else shapes_report
    families = []  # (row, family, weights folder, through the family's prompt completion, config options)
    for name, options in parse_families(args.families or world["families"]):
        cls = get_registry().get(name).cls
        folder = Path(cls.default_weights)
        if not (folder / "model.safetensors").is_file():
            print(f"{name}: no shipped weights in {folder}; skipped")
            continue
        row = name + "".join(f", {k} {v}" for k, v in options.items())
        families.append((row, name, folder, True, options))
        if cls.prompt_completion and not options:  # a variant's row is its settings' only
            families.append((f"{row}, as typed", name, folder, False, options))

    rows = {}
    for row, name, folder, complete, options in families:
        report = evaluate(name, n=args.n, progress=False, complete=complete, options=options or None)
        training = json.loads((folder / "config.json").read_text()).get("training", {})
        rows[row] = {
            "eval": report,
            **chain_totals(training),
            "weights_mb": sum(f.stat().st_size for f in folder.glob("*.safetensors"))
            / 1e6,  # UNet + autoencoder for diffusion
            "seconds_per_output": [],
        }
    if not rows:
        return

    prompts = [world["prompt"].format(i=i) for i in range(world["batch"])]
    pipelines = {
        row: loom.pipeline_for(spec_for(name, complete, options)) for row, name, _, complete, options in families
    }
    clip_seconds = None
    for p in pipelines.values():
        out = p.run(prompts[:8], seed=0, progress=False).output  # warm up: weights loaded, first-call costs paid
        if args.world == "sounds":
            clip_seconds = out.waveforms.shape[-1] / out.sample_rate
    for _ in range(3):
        for name, p in pipelines.items():
            start = time.perf_counter()
            p.run(prompts, seed=1, progress=False)
            rows[name]["seconds_per_output"].append((time.perf_counter() - start) / len(prompts))

    fastest = min(statistics.median(r["seconds_per_output"]) for r in rows.values())
    print(
        f"{evaluate.__name__} on {args.n} fresh {world['what']}s per split; {torch.get_num_threads()} CPU threads, "
        f"torch {torch.__version__}\n"
    )
    print_summary(rows, world, fastest, clip_seconds)
    print()
    print_attributes(rows, world)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


def parse_families(text: str) -> list[tuple[str, dict]]:
    """``vae,diffusion{"steps": 2}`` → [("vae", {}), ("diffusion", {"steps": 2})]."""
    return [
        (name.strip(), json.loads(options) if options else {})
        for name, options in re.findall(r"([^,{]+)(\{[^}]*\})?", text)
        if name.strip()
    ]


def spec_for(name: str, complete: bool, options: dict) -> dict:
    """The default chain around family ``name``, no resize, its config set to ``options``."""
    import loom

    spec = loom.default_spec(name, size=None, complete=complete)
    step = spec["steps"][-1]
    step["config"] = {**step.get("config", {}), **options}
    return spec


def _rate(part: dict) -> str:
    return "" if part is None or part.get("whole_prompt") is None else f"{part['whole_prompt']:.3f}"


def print_summary(rows: dict, world: dict, fastest: float, clip_seconds: "float | None") -> None:
    """One row a family: each split's whole prompt (seen / unseen, one / two objects), diversity,
    training, time and size; then chance."""
    shapes = clip_seconds is None
    objects = ["one object", "two objects"] if shapes else []
    head = [
        "templated",
        *objects,
        "seen / unseen",
        "underspecified",
        "seen / unseen",
        "diversity",
        "training",
        world["output"],
        "weights",
    ]
    print("| family | " + " | ".join(head) + " |")
    print("|---|" + "---|" * len(head))
    for name, r in rows.items():
        e, per = r["eval"], statistics.median(r["seconds_per_output"])
        cells = [f"**{_rate(e['templated'])}**"]
        cells += [_rate(e["templated"].get(k)) for k in ("one_object", "two_objects")] if shapes else []
        cells += [
            f"{_rate(e['templated']['seen'])} / {_rate(e['templated']['unseen'])}",
            f"**{_rate(e['underspecified'])}**",
            f"{_rate(e['underspecified']['seen'])} / {_rate(e['underspecified']['unseen'])}",
            f"{e['diversity']['diversity']:.2f}",
        ]
        train = f"{r['train_minutes']:.0f} min, {r['train_steps']} steps" if r["train_minutes"] else "?"
        ratio = f"{per / clip_seconds:.3f}× real time" if clip_seconds else f"{per / fastest:.1f}×"
        cells += [train, f"{per * 1000:.1f} ms ({ratio})", f"{r['weights_mb']:.1f} MB"]
        print(f"| {name} | " + " | ".join(cells) + " |")
    first = next(iter(rows.values()))["eval"]
    chance = [f"{first[s]['chance']['whole_prompt']:.4f}" for s in ("templated", "underspecified")]
    print("| chance | " + " | ".join([chance[0], *[""] * len(objects), "", chance[1], "", ""] + [""] * 3) + " |")


def print_attributes(rows: dict, world: dict) -> None:
    """Per attribute on the templated prompts, chance last."""
    first = next(iter(rows.values()))["eval"]["templated"]
    attrs = list(first["per_attribute"])
    print("| family (templated) | " + " | ".join(attrs) + f" | whole {world['what']} |")
    print("|---|" + "---|" * len(attrs) + "---|")
    for name, r in rows.items():
        t = r["eval"]["templated"]
        print(
            f"| {name} | " + " | ".join(f"{t['per_attribute'][a]:.3f}" for a in attrs) + f" | {t['whole_prompt']:.3f} |"
        )
    chance = first["chance"]
    print("| chance | " + " | ".join(f"{chance[a]:.3f}" for a in attrs) + f" | {chance['whole_prompt']:.4f} |")


def chain_totals(training: dict) -> dict:
    """Minutes and steps of a run plus those of the runs it started from (``--init``) and of the runs
    that made parts of its start (a diffusion UNet's ``unet_from``), so a fine-tuned model's training
    time is the whole chain's; minutes None where a record lacks them."""
    minutes, steps = _totals(training, "steps")
    return {"train_minutes": minutes, "train_steps": steps}


def _totals(record: dict, step_key: str) -> "tuple[float | None, int]":
    # an init_from record counts its run's steps as "step", a unet_from record (a training record) as "steps"
    minutes, steps = record.get("minutes"), record.get(step_key) or 0
    # a distilled model's teacher (``teacher_from``) is part of what it took to make
    for key, key_steps in (("init_from", "step"), ("unet_from", "steps"), ("teacher_from", "steps")):
        if record.get(key):
            more_minutes, more_steps = _totals(record[key], key_steps)
            steps += more_steps
            minutes = None if minutes is None or more_minutes is None else minutes + more_minutes
    return minutes, steps


if __name__ == "__main__":
    main()
