"""Measuring generators with the checkers of the registered worlds (``loom eval WORLD``).

A world (a :class:`loom.core.World` a plugin registers: Shapes, Sounds, a third party's) supplies
prompts and a checker; this module builds the chain around a generator, runs the world's checker
on it and lays out every world's report the same way (each split, seen and unseen combinations,
the world's subsets, diversity). ``evaluate_shapes``, ``sounds_report`` and the like are the
same calls for Loom's own worlds. ``evaluate_edits`` grades how a generator edits a world's
images (``loom eval edits``), for a world that offers edit tasks.
"""

from __future__ import annotations

import json
from pathlib import Path

#: Seed of the evaluation prompts; training draws its scenes from other seeds, so these are fresh.
EVAL_SEED = 20261125
#: Seed of the validation prompts that choose among a run's snapshots: not the evaluation seed, so
#: the score a chosen snapshot reports on the evaluation prompts is not the one it was chosen by.
VALIDATION_SEED = 7


#: The prompt splits every world's report has: prompts stating every attribute in the training
#: templates, and prompts leaving attributes unsaid in phrasings no model trained on (the
#: ``split`` a :meth:`loom.core.World.prompts` is asked for).
SPLITS = ("templated", "underspecified")
#: Seeds per prompt of the diversity measure.
DIVERSITY_SEEDS = 32


def _world(world):
    """``world`` itself, or the registered world of that name (a one-line error naming the
    registered ones when there is none)."""
    if not isinstance(world, str):
        return world
    from loom.core import get_registry

    return get_registry().world(world)


def default_generator(world) -> str:
    """What a world's evaluation scores when no generator is named: the default generator of
    ``loom generate`` for an image world, its default sound generator for a sound world."""
    from loom.api import DEFAULT_GENERATOR, DEFAULT_SOUND_GENERATOR

    return DEFAULT_SOUND_GENERATOR if _world(world).modality == "sounds" else DEFAULT_GENERATOR


def world_pipeline(
    world,
    generator: str | None = None,
    options: dict | None = None,
    registry=None,
    complete: bool = True,
    strength: float | None = None,
):
    """The default chain around ``generator`` (default: :func:`default_generator`), no resize:
    its prompt completion first unless ``complete`` is False, then a text encoder unless it takes
    Text itself. ``options`` override the generator's config (sampling settings such as
    ``temperature``); ``strength`` sets every step's ``strength`` (an edit's, see
    :func:`loom.api.with_strength`); ``registry`` holds the components (default: the installed
    plugins). An InputError when the chain does not give what the world's checker grades."""
    from loom.api import default_spec, pipeline_for, with_strength
    from loom.chains import Pipeline
    from loom.core import DATA_TYPES, InputError, get_registry
    from loom.core.world import MODALITIES

    world = _world(world)
    generator = generator or default_generator(world)
    spec = default_spec(generator, size=None, registry=registry, complete=complete)
    if options:
        step = spec["steps"][-1]  # the generator: nothing follows it without a resize
        step["config"] = {**step.get("config", {}), **options}
    if strength is not None:
        spec = with_strength(spec, strength, registry)
    pipeline = Pipeline.from_spec(spec, registry) if registry is not None else pipeline_for(spec)
    gives = {m: DATA_TYPES[k] for m, k in MODALITIES.items()}
    if not issubclass(pipeline.output_type, gives[world.modality]):
        found = next((m for m, t in gives.items() if issubclass(pipeline.output_type, t)), None)
        others = [n for n, w in get_registry().worlds().items() if w.modality == found]
        raise InputError(
            f"generator {generator!r} gives {pipeline.output_type.kind}, not {gives[world.modality].kind}: "
            f"{world.checker} scores {world.modality.removesuffix('s')} generators"
            + (f" (for {found.removesuffix('s')} generators use `loom eval {'|'.join(others)}`)" if others else "")
        )
    return pipeline


def world_prompts(world, n: int, seed: int = EVAL_SEED, split: str = "templated", combinations: str = "any"):
    """(prompt, what it was drawn from) pairs of one split (:data:`SPLITS`) of ``world`` (a name
    or World); ``combinations``: any, seen or unseen."""
    from loom.core import InputError

    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return _world(world).prompts(n, seed, split, combinations)


def evaluate_world(
    world,
    generator: str | None = None,
    prompts: list[str] | None = None,
    n: int = 200,
    seed: int = EVAL_SEED,
    output_seed: int = 0,
    batch_size: int = 32,
    progress: bool = True,
    options: dict | None = None,
    registry=None,
    split: str = "templated",
    combinations: str = "any",
    pipeline=None,
    complete: bool = True,
):
    """The checker report of ``world`` (a name or World) for ``generator`` on ``prompts``
    (default: ``n`` fresh prompts of ``split``, see :func:`world_prompts`); output i is seeded
    ``output_seed + i``. The chain is :func:`world_pipeline`'s unless ``pipeline`` is given;
    ``complete`` False measures the generator on prompts as typed, without its prompt completion
    (the chain ``loom generate --as-typed`` runs). The report's ``scores`` hold each prompt's verdicts."""
    world = _world(world)
    texts = [c for c, _ in world_prompts(world, n, seed, split, combinations)] if prompts is None else list(prompts)
    pipeline = pipeline or world_pipeline(world, generator, options, registry, complete)
    return world.evaluate(pipeline, texts, [output_seed + i for i in range(len(texts))], batch_size, progress)


def world_report(
    world,
    generator: str | None = None,
    n: int = 200,
    seed: int = EVAL_SEED,
    progress: bool = True,
    options: dict | None = None,
    registry=None,
    diversity_seeds: int = DIVERSITY_SEEDS,
    complete: bool = True,
) -> dict:
    """Everything ``loom eval WORLD`` reports: each split on ``n`` prompts (see :func:`_report`)
    and how evenly the generator spreads what the world's prompts leave open."""
    world = _world(world)
    generator = generator or default_generator(world)
    pipeline = world_pipeline(world, generator, options, registry, complete)
    out = _report(
        lambda **kw: evaluate_world(world, pipeline=pipeline, **kw),
        n,
        seed,
        progress,
        unseen=world.is_unseen,
        subsets=world.subsets(),
    )
    out["diversity"] = world.diversity(pipeline, diversity_seeds, progress=progress)
    return {"generator": generator, **out}


def subset_rate(report, keep) -> dict:
    """Whole-prompt rate of the items of ``report`` for which ``keep(score)`` holds, with their count."""
    picked = [s.correct for s in report.scores if keep(s)]
    return {"n": len(picked), "whole_prompt": (sum(picked) / len(picked)) if picked else None}


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


# -- Edit tasks (``loom eval edits``) -----------------------------------------------------------

#: The generator ``loom eval edits`` scores when none is named: Loom's own model that edits and repaints.
EDIT_GENERATOR = "diffusion"


def _has_edits(world) -> bool:
    return callable(getattr(world, "edit_tasks", None)) and callable(getattr(world, "score_edits", None))


def _edit_world(world):
    """``world`` (a name or World) when it has edit tasks; else an InputError naming the worlds that do."""
    from loom.core import InputError, get_registry

    world = _world(world)
    if not _has_edits(world):
        having = ", ".join(n for n, w in get_registry().worlds().items() if _has_edits(w)) or "none"
        raise InputError(f"world {world.name!r} has no edit tasks; worlds with edit tasks: {having}")
    return world


def _edit_chains(world, generator: str, strengths: set, options, registry) -> dict:
    """Strength → the chain around ``generator`` set to it (None: the generator's own strength), all built (nothing
    loads) before any runs; an InputError when the chain takes no image or no mask."""
    from loom.core import InputError

    # no prompt completion: an edit's prompt describes the image it starts from (loom.api.default_spec)
    chains = {None: world_pipeline(world, generator, options, registry, complete=False)}
    missing = [name for name in ("image", "mask") if name not in chains[None].takes]
    if missing:
        raise InputError(
            f"generator {generator!r} does not edit images (its chain takes no {' and no '.join(missing)}): "
            "`loom eval edits` scores generators whose steps take an image and a mask, such as 'diffusion'"
        )
    for strength in sorted(s for s in strengths if s is not None):
        chains[strength] = world_pipeline(world, generator, options, registry, complete=False, strength=strength)
    return chains


def _run_edits(chains: dict, tasks: list, output_seed: int, batch_size: int, progress: bool) -> list:
    """Each task's output (H×W×3 uint8; task i seeded ``output_seed + i``): the tasks of one strength, with masks
    or without, run together ``batch_size`` at a time."""
    from PIL import Image as PILImage
    from tqdm.auto import tqdm

    images = [PILImage.fromarray(t.image()) for t in tasks]
    masks = [None if (m := t.mask()) is None else PILImage.fromarray(m, "L") for t in tasks]
    groups: dict = {}
    for i, task in enumerate(tasks):
        groups.setdefault((task.strength, masks[i] is None), []).append(i)
    outputs: list = [None] * len(tasks)
    with tqdm(total=len(tasks), desc="editing", unit="image", disable=not progress, delay=1.0) as bar:
        for (strength, unmasked), todo in groups.items():
            for start in range(0, len(todo), batch_size):
                chunk = todo[start : start + batch_size]
                given = {"image": [images[i] for i in chunk], "mask": None if unmasked else [masks[i] for i in chunk]}
                texts, seeds = [tasks[i].prompt for i in chunk], [output_seed + i for i in chunk]
                result = chains[strength].run(texts, seeds, progress=False, **given)
                for i, output in zip(chunk, result.output.to_numpy()):
                    outputs[i] = output
                bar.update(len(chunk))
    return outputs


def evaluate_edits(
    generator: str | None = None,
    n: int = 100,
    seed: int = EVAL_SEED,
    *,
    world="shapes",
    output_seed: int = 0,
    batch_size: int = 32,
    progress: bool = True,
    options: dict | None = None,
    registry=None,
) -> dict:
    """What ``loom eval edits`` reports: ``generator`` (default :data:`EDIT_GENERATOR`) on ``n`` edit tasks of each
    kind that ``world`` (a name or World) draws from ``seed``, output i seeded ``output_seed + i``, scored by the
    world: per kind (Shapes: recolour, repaint, keep) ``n``, ``score`` and ``chance``, and each task's verdict in
    ``items``. ``options``, ``registry``: as :func:`world_pipeline` takes them. The prompts go as typed, with no
    prompt completion (an edit's prompt describes an image that exists: :func:`loom.api.default_spec`).

    Edit tasks are optional beyond :class:`loom.core.World`: a world offers them with ``edit_tasks(n, seed)`` (tasks
    with ``prompt``, ``strength`` (None: the generator's own), ``image()`` (H×W×3 uint8) and ``mask()`` (H×W uint8,
    255 = repaint, or None)) and ``score_edits(tasks, outputs)`` (a dict of kinds, each with ``n``, ``score``,
    ``chance``, ``about``; ``items``). Every chain is built, and checked to take an image and a mask, before any
    runs."""
    from loom.core import InputError

    if n < 1 or seed < 0:
        raise InputError(f"edit tasks need n ≥ 1 and a seed ≥ 0, not n={n}, seed={seed}")
    world = _edit_world(world)
    generator = generator or EDIT_GENERATOR
    tasks = world.edit_tasks(n, seed)
    chains = _edit_chains(world, generator, {t.strength for t in tasks}, options, registry)
    outputs = _run_edits(chains, tasks, output_seed, batch_size, progress)
    return {"generator": generator, "world": world.name, "n": n, "seed": seed, **world.score_edits(tasks, outputs)}


# -- Loom's own worlds, by their names of old -----------------------------------------------------


def shapes_prompts(n: int, seed: int = EVAL_SEED, split: str = "templated", combinations: str = "any"):
    """(prompt, scene) pairs of one split (:data:`SPLITS`); ``combinations``: any, seen or unseen."""
    return world_prompts("shapes", n, seed, split, combinations)


def sounds_prompts(n: int, seed: int = EVAL_SEED, split: str = "templated", combinations: str = "any"):
    """(caption, sound) pairs of one split (:data:`SPLITS`); ``combinations``: any, seen or unseen."""
    return world_prompts("sounds", n, seed, split, combinations)


def evaluate_shapes(generator: str | None = None, prompts: list[str] | None = None, *, image_seed: int = 0, **settings):
    """ShapesEval report for ``generator``: :func:`evaluate_world` of the Shapes world, image i
    seeded ``image_seed + i`` (``settings``: ``n``, ``seed``, ``split``, ... as it takes them)."""
    return evaluate_world("shapes", generator, prompts, output_seed=image_seed, **settings)


def evaluate_sounds(generator: str, prompts: list[str] | None = None, *, clip_seed: int = 0, **settings):
    """SoundsEval report for the Audio generator ``generator`` (a registered name or trained
    folder): :func:`evaluate_world` of the Sounds world, clip i seeded ``clip_seed + i``."""
    return evaluate_world("sounds", generator, prompts, output_seed=clip_seed, **settings)


def shapes_report(
    generator: str | None = None,
    n: int = 200,
    seed: int = EVAL_SEED,
    progress: bool = True,
    options: dict | None = None,
    diversity_seeds: int = DIVERSITY_SEEDS,
    complete: bool = True,
) -> dict:
    """Everything ``loom eval shapes`` reports: :func:`world_report` of the Shapes world."""
    return world_report(
        "shapes", generator, n, seed, progress, options=options, diversity_seeds=diversity_seeds, complete=complete
    )


def sounds_report(
    generator: str,
    n: int = 200,
    seed: int = EVAL_SEED,
    progress: bool = True,
    registry=None,
    diversity_seeds: int = DIVERSITY_SEEDS,
    complete: bool = True,
) -> dict:
    """Everything ``loom eval sounds`` reports: :func:`world_report` of the Sounds world."""
    return world_report(
        "sounds", generator, n, seed, progress, registry=registry, diversity_seeds=diversity_seeds, complete=complete
    )


def _shapes_pipeline(generator: str | None, options: dict | None, complete: bool = True):
    return world_pipeline("shapes", generator, options, complete=complete)


def shapes_diversity(pipeline, seeds: int = DIVERSITY_SEEDS, batch_size: int = 32, progress: bool = True) -> dict:
    """How evenly a generator spreads what the Shapes diversity prompts leave open (position,
    size, background) over ``seeds`` seeds each (see :func:`diversity_of`)."""
    return _world("shapes").diversity(pipeline, seeds, progress=progress, batch_size=batch_size)


def diversity_of(images: list, prompts) -> dict:
    """``images[k]``: the images made for one-object Shapes ``prompts[k]`` over many seeds; the
    spread of what ShapesEval detects where they leave attributes open (see ``ShapesWorld.diversity_of``)."""
    return _world("shapes").diversity_of(images, prompts)


def _run_world(config: dict):
    """The world a trained folder's ``config`` says it was trained on; for a folder of images (or
    a run that does not say), Loom's own world of its family's modality."""
    from loom.core import get_registry

    registry = get_registry()
    data = config.get("training", {}).get("data")
    if isinstance(data, dict) and data.get("data") in registry.worlds():
        return registry.world(data["data"])
    sounds = registry.get(config["family"]).cls.output_type.kind == "Audio"
    return registry.world("sounds" if sounds else "shapes")


def evaluate_snapshots(run: "str | Path", n: int = 200, seed: int = VALIDATION_SEED, progress: bool = True) -> dict:
    """Score each snapshot a run kept (``loom train --keep-every``) and its final export on ``n``
    validation prompts of each split (:data:`SPLITS`) drawn with ``seed``, with the checker of the
    run's world (the one it trained on, see :func:`_run_world`), by the mean whole-prompt rate of the splits; write the scores
    to ``RUN/snapshots/picked.json`` and return them with the best snapshot's folder.

    A snapshot never changes, so one already scored in ``picked.json`` on the same ``n`` and
    ``seed`` keeps its score (a run can be checked as it trains); the final export is scored anew.

    The evaluation seed is refused: choosing by it would make the reported score the maximum of
    many noisy ones."""
    from loom.core import InputError
    from loom.core.files import write_json_atomic
    from loom.training import SNAPSHOTS

    run = Path(run)
    if seed == EVAL_SEED:
        raise InputError(
            f"--seed {seed} is the evaluation seed; choose snapshots on other prompts (default {VALIDATION_SEED})"
        )
    candidates = sorted(p for p in (run / SNAPSHOTS).glob("step-*") if (p / "config.json").is_file())
    if not candidates:
        raise InputError(f"{str(run)!r} holds no snapshots; train with `loom train ... --keep-every N` to keep them")
    final = run / "config.json"
    # the final export, unless a snapshot of the same step already holds it
    if final.is_file() and f"step-{json.loads(final.read_text())['training']['steps']:06d}" not in {
        c.name for c in candidates
    }:
        candidates.append(run)
    world = _run_world(json.loads(candidates[0].joinpath("config.json").read_text()))
    picked = run / SNAPSHOTS / "picked.json"
    before = json.loads(picked.read_text()) if picked.is_file() else {}
    kept = before.get("whole", {}) if (before.get("n"), before.get("seed")) == (n, seed) else {}
    scores = {}
    for folder in candidates:
        again = folder.parent.name == SNAPSHOTS and folder.name in kept
        # the mean of the splits: a snapshot is chosen for templated and underspecified prompts alike
        scores[folder.name] = (
            kept[folder.name]
            if again
            else sum(
                evaluate_world(world, str(folder), n=n, seed=seed, progress=False, split=split).to_dict()[
                    "whole_prompt"
                ]
                for split in SPLITS
            )
            / len(SPLITS)
        )
        if progress:
            print(f"  {folder.name:<12} {scores[folder.name]:.3f}" + ("  (scored before)" if again else ""))
    best = max(reversed(candidates), key=lambda f: scores[f.name])  # a tie goes to the later one
    result = {"run": str(run), "world": world.name, "n": n, "seed": seed, "whole": scores, "best": str(best)}
    write_json_atomic(picked, result)
    return result
