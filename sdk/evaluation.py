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
):
    """ShapesEval report for ``generator`` on ``prompts`` (default: ``n`` fresh templated prompts)."""
    from tqdm.auto import tqdm

    from loom.api import default_spec, pipeline_for
    from loom.plugins.shapes import ShapesEval, sample_prompts

    if prompts is None:
        pairs = sample_prompts(n, seed)
        texts, targets = [c for c, _ in pairs], [s for _, s in pairs]
    else:
        texts, targets = list(prompts), list(prompts)
    pipeline = pipeline_for(default_spec(generator, size=None))
    images = []
    with tqdm(total=len(texts), desc="evaluating", unit="image", disable=not progress, delay=1.0) as bar:
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            seeds = [image_seed + start + i for i in range(len(chunk))]
            images.extend(pipeline.run(chunk, seeds, progress=False).output.to_numpy())
            bar.update(len(chunk))
    return ShapesEval().evaluate_many(images, targets)
