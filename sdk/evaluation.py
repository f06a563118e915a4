"""Measuring generators with the project's own procedural checkers."""

from __future__ import annotations

import json
from pathlib import Path

#: Seed of the evaluation prompts; training draws its scenes from other seeds, so these are fresh.
EVAL_SEED = 20261125
#: Seed of the validation prompts that choose among a run's snapshots: not the evaluation seed, so
#: the score a chosen snapshot reports on the evaluation prompts is not the one it was chosen by.
VALIDATION_SEED = 7


def evaluate_shapes(
    generator: str | None = None,
    prompts: list[str] | None = None,
    n: int = 200,
    seed: int = EVAL_SEED,
    image_seed: int = 0,
    batch_size: int = 32,
    progress: bool = True,
    options: dict | None = None,
):
    """ShapesEval report for ``generator`` on ``prompts`` (default: ``n`` fresh templated prompts);
    image i is seeded ``image_seed + i``. ``options`` override the generator's config (sampling
    settings such as ``temperature``). The report's ``scores`` hold each prompt's verdicts."""
    from tqdm.auto import tqdm

    from loom.api import default_spec, pipeline_for
    from loom.plugins.shapes import ShapesEval, sample_prompts

    if prompts is None:
        pairs = sample_prompts(n, seed)
        texts, targets = [c for c, _ in pairs], [s for _, s in pairs]
    else:
        texts, targets = list(prompts), list(prompts)
    spec = default_spec(generator, size=None)
    if options:
        step = next(s for s in spec["steps"] if s["component"] != "text-encoder")
        step["config"] = {**step.get("config", {}), **options}
    pipeline = pipeline_for(spec)
    images = []
    with tqdm(total=len(texts), desc="evaluating", unit="image", disable=not progress, delay=1.0) as bar:
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            seeds = [image_seed + start + i for i in range(len(chunk))]
            images.extend(pipeline.run(chunk, seeds, progress=False).output.to_numpy())
            bar.update(len(chunk))
    return ShapesEval().evaluate_many(images, targets)


def evaluate_sounds(
    generator: str,
    prompts: list[str] | None = None,
    n: int = 200,
    seed: int = EVAL_SEED,
    clip_seed: int = 0,
    batch_size: int = 32,
    progress: bool = True,
    registry=None,
):
    """SoundsEval report for the Audio generator ``generator`` (a registered name or trained
    folder) on ``prompts`` (default: ``n`` fresh templated captions). The chain is the default
    one around it (a text encoder first unless the generator takes Text itself)."""
    from tqdm.auto import tqdm

    from loom.api import default_spec, pipeline_for
    from loom.core import Audio, InputError, Pipeline
    from loom.plugins.sounds import SoundsEval, sample_prompts

    if prompts is None:
        pairs = sample_prompts(n, seed)
        texts, targets = [c for c, _ in pairs], [s for _, s in pairs]
    else:
        texts, targets = list(prompts), list(prompts)
    spec = default_spec(generator, size=None, registry=registry)
    pipeline = Pipeline.from_spec(spec, registry) if registry is not None else pipeline_for(spec)
    if not issubclass(pipeline.output_type, Audio):
        raise InputError(
            f"generator {generator!r} gives {pipeline.output_type.kind}, not Audio: SoundsEval scores sound generators "
            f"(for image generators use `loom eval shapes`)"
        )
    clips, rate = [], None
    with tqdm(total=len(texts), desc="evaluating", unit="clip", disable=not progress, delay=1.0) as bar:
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            seeds = [clip_seed + start + i for i in range(len(chunk))]
            audio = pipeline.run(chunk, seeds, progress=False).output
            rate = audio.sample_rate
            clips.extend(audio.clip(i) for i in range(len(audio)))
            bar.update(len(chunk))
    return SoundsEval().evaluate_many(clips, targets, rate)


def evaluate_snapshots(run: "str | Path", n: int = 200, seed: int = VALIDATION_SEED, progress: bool = True) -> dict:
    """Score each snapshot a run kept (``loom train --keep-every``) and its final export on ``n``
    validation prompts drawn with ``seed``, with the checker of the run's world; write the scores
    to ``RUN/snapshots/picked.json`` and return them with the best snapshot's folder.

    A snapshot never changes, so one already scored in ``picked.json`` on the same ``n`` and
    ``seed`` keeps its score (a run can be checked as it trains); the final export is scored anew.

    The evaluation seed is refused: choosing by it would make the reported score the maximum of
    many noisy ones."""
    from loom.core import InputError, get_registry
    from loom.core.training import write_json_atomic
    from loom.training import SNAPSHOTS

    run = Path(run)
    if seed == EVAL_SEED:
        raise InputError(f"--seed {seed} is the evaluation seed; choose snapshots on other prompts (default {VALIDATION_SEED})")
    candidates = sorted(p for p in (run / SNAPSHOTS).glob("step-*") if (p / "config.json").is_file())
    if not candidates:
        raise InputError(f"{str(run)!r} holds no snapshots; train with `loom train ... --keep-every N` to keep them")
    final = run / "config.json"
    # the final export, unless a snapshot of the same step already holds it
    if final.is_file() and f"step-{json.loads(final.read_text())['training']['steps']:06d}" not in {c.name for c in candidates}:
        candidates.append(run)
    family = json.loads(candidates[0].joinpath("config.json").read_text())["family"]
    sounds = get_registry().get(family).cls.output_type.kind == "Audio"
    evaluate = evaluate_sounds if sounds else evaluate_shapes
    picked = run / SNAPSHOTS / "picked.json"
    before = json.loads(picked.read_text()) if picked.is_file() else {}
    kept = before.get("whole", {}) if (before.get("n"), before.get("seed")) == (n, seed) else {}
    scores = {}
    for folder in candidates:
        again = folder.parent.name == SNAPSHOTS and folder.name in kept
        scores[folder.name] = kept[folder.name] if again else evaluate(str(folder), n=n, seed=seed, progress=False).to_dict()["whole_prompt"]
        if progress:
            print(f"  {folder.name:<12} {scores[folder.name]:.3f}" + ("  (scored before)" if again else ""))
    best = max(reversed(candidates), key=lambda f: scores[f.name])  # a tie goes to the later one
    result = {"run": str(run), "world": "sounds" if sounds else "shapes", "n": n, "seed": seed,
              "whole": scores, "best": str(best)}
    write_json_atomic(picked, result)
    return result
