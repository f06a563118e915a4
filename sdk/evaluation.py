"""Measuring generators with the project's own procedural checkers."""

from __future__ import annotations

#: Seed of the evaluation prompts; training draws its scenes from other seeds, so these are fresh.
EVAL_SEED = 20261125


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
