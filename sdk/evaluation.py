"""Measuring generators with the project's own procedural checkers."""

from __future__ import annotations

import json
from pathlib import Path

#: Seed of the evaluation prompts; training draws its scenes from other seeds, so these are fresh.
EVAL_SEED = 20261125
#: Seed of the validation prompts that choose among a run's snapshots: not the evaluation seed, so
#: the score a chosen snapshot reports on the evaluation prompts is not the one it was chosen by.
VALIDATION_SEED = 7


#: The prompt splits every world's report has: prompts stating every attribute in the training
#: templates, and prompts leaving attributes unsaid in phrasings no model trained on.
SPLITS = ("templated", "underspecified")
#: Seeds per prompt of the diversity measure.
DIVERSITY_SEEDS = 32


def _shapes_pipeline(generator: str | None, options: dict | None, complete: bool = True):
    from loom.api import default_spec, pipeline_for

    spec = default_spec(generator, size=None, complete=complete)
    if options:
        step = spec["steps"][-1]  # the generator: nothing follows it without a resize
        step["config"] = {**step.get("config", {}), **options}
    return pipeline_for(spec)


def _images(pipeline, texts: list[str], seeds: list[int], batch_size: int, progress: bool, desc: str = "evaluating"):
    from tqdm.auto import tqdm

    images = []
    with tqdm(total=len(texts), desc=desc, unit="image", disable=not progress, delay=1.0) as bar:
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            images.extend(pipeline.run(chunk, seeds[start : start + len(chunk)], progress=False).output.to_numpy())
            bar.update(len(chunk))
    return images


def shapes_prompts(n: int, seed: int = EVAL_SEED, split: str = "templated", combinations: str = "any"):
    """(prompt, scene) pairs of one split (:data:`SPLITS`); ``combinations``: any, seen or unseen."""
    from loom.plugins import shapes

    return _split_prompts(shapes, n, seed, split, combinations)


def _split_prompts(world, n: int, seed: int, split: str, combinations: str):
    from loom.core import InputError

    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    sample = world.sample_prompts if split == "templated" else world.sample_underspecified_prompts
    return sample(n, seed, combinations=combinations)


def evaluate_shapes(
    generator: str | None = None,
    prompts: list[str] | None = None,
    n: int = 200,
    seed: int = EVAL_SEED,
    image_seed: int = 0,
    batch_size: int = 32,
    progress: bool = True,
    options: dict | None = None,
    split: str = "templated",
    combinations: str = "any",
    pipeline=None,
    complete: bool = True,
):
    """ShapesEval report for ``generator`` on ``prompts`` (default: ``n`` fresh prompts of
    ``split``, see :func:`shapes_prompts`); image i is seeded ``image_seed + i``. ``options``
    override the generator's config (sampling settings such as ``temperature``); ``complete``
    False measures the generator on prompts as typed, without its prompt completion (the chain
    ``loom generate --as-typed`` runs). The report's ``scores`` hold each prompt's verdicts."""
    from loom.plugins.shapes import ShapesEval

    if prompts is None:
        texts = [c for c, _ in shapes_prompts(n, seed, split, combinations)]
    else:
        texts = list(prompts)
    pipeline = pipeline or _shapes_pipeline(generator, options, complete)
    images = _images(pipeline, texts, [image_seed + i for i in range(len(texts))], batch_size, progress)
    # Scored on what each prompt states (parsed from its text), never on the scene it came from.
    report = ShapesEval().evaluate_many(images, texts)
    report.prompts = texts
    return report


def subset_rate(report, keep) -> dict:
    """Whole-prompt rate of the items of ``report`` for which ``keep(score)`` holds, with their count."""
    picked = [s.correct for s in report.scores if keep(s)]
    return {"n": len(picked), "whole_prompt": (sum(picked) / len(picked)) if picked else None}


def shapes_diversity(pipeline, seeds: int = DIVERSITY_SEEDS, batch_size: int = 32, progress: bool = True) -> dict:
    """How evenly a generator spreads what :data:`DIVERSITY_PROMPTS` leave open (position, size,
    background) over ``seeds`` seeds each (see :func:`diversity_of`)."""
    from loom.plugins.shapes import DIVERSITY_PROMPTS

    texts = [p for p in DIVERSITY_PROMPTS for _ in range(seeds)]
    images = _images(pipeline, texts, [i % seeds for i in range(len(texts))], batch_size, progress, "diversity")
    return diversity_of([images[k * seeds : (k + 1) * seeds] for k in range(len(DIVERSITY_PROMPTS))], DIVERSITY_PROMPTS)


def diversity_of(images: list, prompts) -> dict:
    """``images[k]``: the images made for one-object ``prompts[k]`` over many seeds. Per attribute
    each prompt leaves open (position, size, background), ``spread`` of what ShapesEval detects
    against the world's own distribution, averaged over the prompts; ``diversity`` is the least
    even attribute (1.0 = as even as the world, 0 = always the same)."""
    from loom.plugins.common.report import spread
    from loom.plugins.shapes import ShapesEval, parse_caption, world_distribution

    checker = ShapesEval()
    per: dict[str, list[float]] = {"position": [], "size": [], "background": []}
    for batch, prompt in zip(images, prompts):
        spec = parse_caption(prompt)
        scores = [checker.evaluate(img, spec) for img in batch]
        for attribute, values in per.items():
            if (spec.background if attribute == "background" else getattr(spec.objects[0], attribute)) is not None:
                continue  # stated, not open
            found = [s.detected[0]["background"] if attribute == "background" else s.detected[1].get(attribute) for s in scores]
            values.append(spread(found, world_distribution(attribute, spec.objects[0].colour)))
    means = {a: sum(v) / len(v) for a, v in per.items() if v}
    return {"prompts": len(images), "seeds": len(images[0]) if images else 0, "per_attribute": means,
            "diversity": min(means.values()) if means else None}


def shapes_report(
    generator: str | None = None, n: int = 200, seed: int = EVAL_SEED, progress: bool = True,
    options: dict | None = None, diversity_seeds: int = DIVERSITY_SEEDS, complete: bool = True,
) -> dict:
    """Everything ``loom eval shapes`` reports (see :func:`_report`), and the diversity of what
    :data:`~loom.plugins.shapes.DIVERSITY_PROMPTS` leave open."""
    from loom.plugins.shapes import is_held_out, parse_caption

    pipeline = _shapes_pipeline(generator, options, complete)
    out = _report(
        lambda **kw: evaluate_shapes(pipeline=pipeline, **kw), n, seed, progress,
        unseen=lambda text: any(map(is_held_out, parse_caption(text).objects)),
        subsets={"one_object": lambda s: s.objects == 1, "two_objects": lambda s: s.objects == 2},
    )
    out["diversity"] = shapes_diversity(pipeline, diversity_seeds, progress=progress)
    return {"generator": generator or "vae", **out}


def _report(evaluate, n: int, seed: int, progress: bool, unseen, subsets: dict) -> dict:
    """Each split (:data:`SPLITS`) on ``n`` prompts, with the whole-prompt rate of its ``subsets``
    (name → test of an item's score) and of its seen combinations (``unseen(text)`` false), and
    ``n // 2`` more prompts of unseen combinations only."""
    out: dict = {"n": n}
    for split in SPLITS:
        report = evaluate(n=n, seed=seed, progress=progress, split=split)
        texts = report.prompts
        new = evaluate(n=max(1, n // 2), seed=seed, progress=progress, split=split, combinations="unseen")
        seen = [s.correct for s, t in zip(report.scores, texts) if not unseen(t)]
        out[split] = {
            **report.to_dict(),
            **{name: subset_rate(report, keep) for name, keep in subsets.items()},
            "seen": {"n": len(seen), "whole_prompt": sum(seen) / len(seen) if seen else None},
            "unseen": subset_rate(new, lambda s: True),
        }
    return out


def _sounds_pipeline(generator: str, registry=None, complete: bool = True):
    from loom.api import default_spec, pipeline_for
    from loom.core import Audio, InputError, Pipeline

    spec = default_spec(generator, size=None, registry=registry, complete=complete)
    pipeline = Pipeline.from_spec(spec, registry) if registry is not None else pipeline_for(spec)
    if not issubclass(pipeline.output_type, Audio):
        raise InputError(
            f"generator {generator!r} gives {pipeline.output_type.kind}, not Audio: SoundsEval scores sound generators "
            f"(for image generators use `loom eval shapes`)"
        )
    return pipeline


def _clips(pipeline, texts: list[str], seeds: list[int], batch_size: int, progress: bool, desc: str = "evaluating"):
    """The clips for ``texts`` (item i seeded ``seeds[i]``) and their sample rate."""
    from tqdm.auto import tqdm

    clips, rate = [], None
    with tqdm(total=len(texts), desc=desc, unit="clip", disable=not progress, delay=1.0) as bar:
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            audio = pipeline.run(chunk, seeds[start : start + len(chunk)], progress=False).output
            rate = audio.sample_rate
            clips.extend(audio.clip(i) for i in range(len(audio)))
            bar.update(len(chunk))
    return clips, rate


def sounds_prompts(n: int, seed: int = EVAL_SEED, split: str = "templated", combinations: str = "any"):
    """(caption, sound) pairs of one split (:data:`SPLITS`); ``combinations``: any, seen or unseen."""
    from loom.plugins import sounds

    return _split_prompts(sounds, n, seed, split, combinations)


def evaluate_sounds(
    generator: str,
    prompts: list[str] | None = None,
    n: int = 200,
    seed: int = EVAL_SEED,
    clip_seed: int = 0,
    batch_size: int = 32,
    progress: bool = True,
    registry=None,
    split: str = "templated",
    combinations: str = "any",
    pipeline=None,
    complete: bool = True,
):
    """SoundsEval report for the Audio generator ``generator`` (a registered name or trained
    folder) on ``prompts`` (default: ``n`` fresh captions of ``split``, see :func:`sounds_prompts`).
    The chain is the default one around it (a text encoder first unless the generator takes Text
    itself; its prompt completion first unless ``complete`` is False)."""
    from loom.plugins.sounds import SoundsEval

    if prompts is None:
        texts = [c for c, _ in sounds_prompts(n, seed, split, combinations)]
    else:
        texts = list(prompts)
    pipeline = pipeline or _sounds_pipeline(generator, registry, complete)
    clips, rate = _clips(pipeline, texts, [clip_seed + i for i in range(len(texts))], batch_size, progress)
    report = SoundsEval().evaluate_many(clips, texts, rate)
    report.prompts = texts
    return report


def sounds_report(
    generator: str, n: int = 200, seed: int = EVAL_SEED, progress: bool = True, registry=None,
    diversity_seeds: int = DIVERSITY_SEEDS, complete: bool = True,
) -> dict:
    """Everything ``loom eval sounds`` reports (see :func:`_report`), and the diversity of what
    :data:`~loom.plugins.sounds.DIVERSITY_PROMPTS` leave open."""
    from loom.plugins.sounds import DIVERSITY_PROMPTS, SoundsEval, is_held_out, parse_caption

    pipeline = _sounds_pipeline(generator, registry, complete)
    out = _report(
        lambda **kw: evaluate_sounds(generator, pipeline=pipeline, **kw), n, seed, progress,
        unseen=lambda text: is_held_out(parse_caption(text)), subsets={},
    )
    texts = [p for p in DIVERSITY_PROMPTS for _ in range(diversity_seeds)]
    clips, rate = _clips(pipeline, texts, [i % diversity_seeds for i in range(len(texts))], 16, progress, "diversity")
    per_prompt = [clips[k * diversity_seeds : (k + 1) * diversity_seeds] for k in range(len(DIVERSITY_PROMPTS))]
    div = SoundsEval().diversity(per_prompt, DIVERSITY_PROMPTS, rate)
    out["diversity"] = {"prompts": len(DIVERSITY_PROMPTS), "seeds": diversity_seeds,
                        "per_attribute": {a: v for a, v in div.per_attribute.items() if v is not None},
                        "diversity": div.overall}
    return {"generator": generator, **out}


def evaluate_snapshots(run: "str | Path", n: int = 200, seed: int = VALIDATION_SEED, progress: bool = True) -> dict:
    """Score each snapshot a run kept (``loom train --keep-every``) and its final export on ``n``
    validation prompts of each split (:data:`SPLITS`) drawn with ``seed``, with the checker of the
    run's world, by the mean whole-prompt rate of the splits; write the scores
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
        # the mean of the splits: a snapshot is chosen for templated and underspecified prompts alike
        scores[folder.name] = kept[folder.name] if again else sum(
            evaluate(str(folder), n=n, seed=seed, progress=False, split=split).to_dict()["whole_prompt"] for split in SPLITS
        ) / len(SPLITS)
        if progress:
            print(f"  {folder.name:<12} {scores[folder.name]:.3f}" + ("  (scored before)" if again else ""))
    best = max(reversed(candidates), key=lambda f: scores[f.name])  # a tie goes to the later one
    result = {"run": str(run), "world": "sounds" if sounds else "shapes", "n": n, "seed": seed,
              "whole": scores, "best": str(best)}
    write_json_atomic(picked, result)
    return result
