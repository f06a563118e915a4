"""The calls an app developer makes: generate, save, reproduce."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from loom.core import Image, InputError, Pipeline, PipelineSpec, ProvenanceError, Result
from loom.core.files import read_record

#: The generator ``loom generate`` uses when none is named.
DEFAULT_GENERATOR = "vae"
#: Longer side of generated images after the resize step.
DEFAULT_SIZE = 256

_pipelines: dict[str, Pipeline] = {}


def generator_step(generator: str | None) -> dict:
    """The spec step for ``generator``: a registered name, ``plugin:name``, or a trained folder."""
    generator = generator or DEFAULT_GENERATOR
    folder = Path(generator)
    if folder.is_dir():
        config = folder / "config.json"
        if not config.is_file():
            raise InputError(f"{generator!r} is a folder but holds no config.json: it is not a trained Loom generator")
        family = json.loads(config.read_text()).get("family")
        if not family:
            raise InputError(f"{str(config)!r} names no model family ('family' key): it is not a trained Loom generator")
        return {"component": family, "config": {"weights": str(folder.resolve())}}
    return {"component": generator}


def default_spec(generator: str | None = None, size: int | None = DEFAULT_SIZE) -> dict:
    """Text encoder → ``generator`` → resize to ``size`` (no resize when ``size`` is None)."""
    steps = [{"component": "text-encoder"}, generator_step(generator)]
    if size:
        steps.append({"component": "resize", "config": {"size": size}})
    return {"steps": steps}


def pipeline_for(spec: Any) -> Pipeline:
    """A built pipeline for ``spec``, cached per process so weights load once."""
    key = json.dumps(PipelineSpec.load(spec).model_dump(mode="json"), sort_keys=True)
    if key not in _pipelines:
        _pipelines[key] = Pipeline.from_spec(spec)
    return _pipelines[key]


def generate(
    prompt: str | Sequence[str],
    seed: Any = None,
    *,
    generator: str | None = None,
    size: int | None = DEFAULT_SIZE,
    progress: bool = True,
) -> Result:
    """Generate from one prompt or a list of prompts with the default chain.

    ``seed``: int (prompt *i* gets ``seed + i``), one int per prompt, or None (random, recorded).
    ``generator``: a registered generator name or a trained folder (default: the shipped VAE).
    """
    return pipeline_for(default_spec(generator, size)).run(prompt, seed, progress=progress)


def output_paths(path: "str | Path", count: int) -> list[Path]:
    """``out.png`` for one item; ``out-1.png`` … ``out-N.png`` for several."""
    path = Path(path)
    if count == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{i + 1}{path.suffix}") for i in range(count)]


def save(result: Result, path: "str | Path") -> list[Path]:
    """Write each output of ``result`` with its own provenance record (atomically)."""
    if not isinstance(result.output, Image):
        raise InputError(f"cannot save {result.output.kind} output as an image")
    paths = output_paths(path, len(result))
    for i, p in enumerate(paths):
        result.output.save(p, index=i, record=result.record(i))
    return paths


def reproduce(source: "str | Path", path: "str | Path | None" = None, progress: bool = True) -> Result:
    """Regenerate the output recorded in ``source`` (a file Loom wrote); write it to ``path`` if given."""
    record = read_record(source)
    try:
        spec, inputs, seeds = record["spec"], record["inputs"], record["seeds"]
    except KeyError as err:
        raise ProvenanceError(f"{str(source)!r}: its Loom record lacks {err.args[0]!r}") from None
    if any(x is None for x in inputs):
        raise ProvenanceError(f"{str(source)!r}: its record holds no replayable inputs")
    result = pipeline_for(spec).run(inputs, seeds, progress=progress)
    if path is not None:
        save(result, path)
    return result
