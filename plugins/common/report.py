"""What Loom's procedural checkers (ShapesEval, SoundsEval) report over many items, and the
batched runs of a chain that they score (no torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np


@dataclass
class EvalReport:
    """Accuracy over many items.

    ``per_attribute[a]`` is the fraction of prompts stating ``a`` that got it right (None if no
    prompt states it). ``chance`` is what uniform random guessing would score: per prompt the
    product of 1/(number of values) over each stated attribute, averaged over the prompts.
    ``scores`` holds each item's own score (an object with ``attributes``, ``correct`` and ``to_dict``).
    """

    per_attribute: dict[str, float | None]
    whole_prompt: float
    n: int
    chance: dict[str, float | None]
    scores: list = field(default_factory=list, repr=False)
    #: the prompt texts, where the caller scored texts
    prompts: list = field(default_factory=list, repr=False)

    def to_dict(self, include_scores: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "n": self.n,
            "whole_prompt": self.whole_prompt,
            "per_attribute": dict(self.per_attribute),
            "chance": dict(self.chance),
        }
        if include_scores:
            d["scores"] = [s.to_dict() for s in self.scores]
        return d


def summarise(scores: Sequence, chances: Sequence[dict], attributes: Sequence[str]) -> EvalReport:
    """The report over per-item ``scores`` and their chance rates (dicts per attribute plus ``whole_prompt``)."""
    per_attribute: dict[str, float | None] = {}
    chance: dict[str, float | None] = {}
    for a in attributes:
        vals = [s.attributes[a] for s in scores if s.attributes[a] is not None]
        per_attribute[a] = float(np.mean(vals)) if vals else None
        cs = [c[a] for c in chances if c[a] is not None]
        chance[a] = float(np.mean(cs)) if cs else None
    n = len(scores)
    whole = float(np.mean([s.correct for s in scores])) if n else 0.0
    chance["whole_prompt"] = float(np.mean([c["whole_prompt"] for c in chances])) if n else None
    return EvalReport(per_attribute, whole, n, chance, list(scores))


def spec_reader(
    parse_caption: Callable[[str], Any], example: type, from_example: Callable[[Any], Any], spec: type
) -> Callable[[Any], Any]:
    """A function that reads a prompt as the ``spec`` a checker grades against, the prompt given as
    a caption (read by ``parse_caption``), an ``example`` of the world (a Scene, a Sound: made a
    spec by ``from_example``) or a ``spec`` already; anything else is a TypeError naming the three."""

    def as_spec(prompt: Any) -> Any:
        if isinstance(prompt, str):
            return parse_caption(prompt)
        if isinstance(prompt, example):
            return from_example(prompt)
        if isinstance(prompt, spec):
            return prompt
        raise TypeError(f"prompt must be a caption, {example.__name__} or {spec.__name__}, got {type(prompt).__name__}")

    return as_spec


def spread(values: Sequence[Any], world: dict[Any, float]) -> float:
    """How evenly ``values`` cover what the world allows: the detected values of one attribute a
    prompt left open, one per seed (None where nothing was found), against ``world``, the world's
    own distribution of that attribute (value → probability).

    The entropy of the found values, with the Miller–Madow correction for a small sample (an even
    sample of 32 draws over 9 values is otherwise about 0.94 of the true entropy), over the
    world's entropy, times the fraction of seeds where something was found. 1.0 is as even as the
    world; a model that always answers the same scores 0.
    """
    total = len(values)
    found = [v for v in values if v is not None]
    h_world = -sum(p * np.log(p) for p in world.values() if p > 0)
    if not found or h_world <= 0:
        return 0.0
    _, counts = np.unique(np.array(found, dtype=object).astype(str), return_counts=True)
    p = counts / counts.sum()
    h = float(-(p * np.log(p)).sum()) + (len(counts) - 1) / (2 * len(found))
    return min(h / h_world, 1.0) * len(found) / total


def run_in_batches(
    pipeline,
    texts: Sequence[str],
    seeds: Sequence[int],
    batch_size: int,
    progress: bool,
    desc: str = "evaluating",
    unit: str = "image",
):
    """Yield ``pipeline``'s output batch for each ``batch_size`` of ``texts`` in turn (item i
    seeded ``seeds[i]``), with a progress bar counting ``unit`` s."""
    from tqdm.auto import tqdm

    with tqdm(total=len(texts), desc=desc, unit=unit, disable=not progress, delay=1.0) as bar:
        for start in range(0, len(texts), batch_size):
            chunk = list(texts[start : start + batch_size])
            yield pipeline.run(chunk, list(seeds[start : start + len(chunk)]), progress=False).output
            bar.update(len(chunk))
