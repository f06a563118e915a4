"""The calls an app developer makes: generate, save, reproduce."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from loom.chains import Pipeline, read_spec
from loom.core import Audio, Data, Image, InputError, ProvenanceError, Result, Text
from loom.outputs import AudioFormat, check_output_path, read_audio, read_record, write
from loom.records import digest

#: The generator ``loom generate`` uses when none is named.
DEFAULT_GENERATOR = "vae"
#: The generator ``loom generate`` uses when none is named and the output is a sound file
#: (.wav or .flac), and the one ``loom eval sounds`` scores by default: the better-scoring of the
#: first-party text-to-sound families (docs/audio.md).
DEFAULT_SOUND_GENERATOR = "gan-sound"
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
            raise InputError(
                f"{str(config)!r} names no model family ('family' key): it is not a trained Loom generator"
            )
        return {"component": family, "config": {"weights": str(folder.resolve())}}
    return {"component": generator}


def default_spec(
    generator: str | None = None, size: int | None = DEFAULT_SIZE, registry=None, complete: bool = True
) -> dict:
    """Text encoder → ``generator`` → resize to ``size`` (no resize when ``size`` is None).

    The chain fits the generator's types (looked up in ``registry``, default: the installed
    plugins; nothing loads): a generator that takes Text directly gets no text encoder, and one
    that does not give an Image (an Audio generator) gets no resize. An unknown generator keeps
    the image chain, so that building it names the unknown step. With ``complete``, a generator
    that names a ``prompt_completion`` gets it first, so a typed prompt reaches it as the kind
    of caption it was trained on."""
    step = generator_step(generator)
    cls = _component_class(step["component"], registry)
    steps = [] if cls is not None and issubclass(Text, cls.input_type) else [{"component": "text-encoder"}]
    if complete and getattr(cls, "prompt_completion", None):
        steps.insert(0, {"component": cls.prompt_completion})
    steps.append(step)
    if size and (cls is None or issubclass(cls.output_type, Image)):
        steps.append({"component": "resize", "config": {"size": size}})
    return {"steps": steps}


def _component_class(name: str, registry=None):
    from loom.core import LoomError, get_registry

    try:
        return (registry or get_registry()).get(name).cls
    except LoomError:
        return None


def pipeline_for(spec: Any) -> Pipeline:
    """A built pipeline for ``spec``, cached per process so weights load once."""
    spec = read_spec(spec)
    key = json.dumps(spec.model_dump(mode="json"), sort_keys=True)
    if key not in _pipelines:
        _pipelines[key] = Pipeline.from_spec(spec)
    return _pipelines[key]


def spoken_spec(generator: str | None = None, size: int | None = DEFAULT_SIZE) -> dict:
    """Spoken-prompt encoder → ``generator`` (one that takes an Embedding) → resize to ``size``
    (no resize when ``size`` is None): the chain for a spoken prompt."""
    steps = [{"component": "spoken-prompt"}, generator_step(generator)]
    if size:
        steps.append({"component": "resize", "config": {"size": size}})
    return {"steps": steps}


def read_spoken_prompts(prompt_audio: Any) -> Audio:
    """``prompt_audio`` (a WAV or FLAC path, a list of paths, or an :class:`Audio`) as one Audio batch."""
    if isinstance(prompt_audio, Audio):
        return prompt_audio
    paths = [prompt_audio] if isinstance(prompt_audio, (str, Path)) else list(prompt_audio)
    if not paths:
        raise InputError("prompt_audio: no files given")
    clips = [read_audio(p) for p in paths]
    rates = {c.sample_rate for c in clips}
    if len(rates) > 1:
        # one batch holds one rate: bring every file to the first file's rate
        import torchaudio

        rate = clips[0].sample_rate
        clips = [
            c
            if c.sample_rate == rate
            else Audio(torchaudio.functional.resample(c.waveforms, c.sample_rate, rate), rate)
            for c in clips
        ]
    return Audio.concat([Audio(c.waveforms.mean(1, keepdim=True), c.sample_rate) for c in clips])


def generate(
    prompt: str | Sequence[str] | None = None,
    seed: Any = None,
    *,
    generator: str | None = None,
    size: int | None = DEFAULT_SIZE,
    progress: bool = True,
    prompt_audio: Any = None,
    complete: bool = True,
    output: "str | Path | None" = None,
    count: int = 1,
) -> Result:
    """Generate from one prompt or a list of prompts with the default chain (images, or sounds for
    an Audio generator).

    ``seed``: int (prompt *i* gets ``seed + i``), one int per prompt, or None (random, recorded).
    ``generator``: a registered generator name or a trained folder (default: the shipped VAE; the
    shipped sound generator when ``output`` is a .wav or .flac file).
    ``prompt_audio``: instead of ``prompt``, spoken prompts (a WAV or FLAC path, a list of them,
    or an :class:`Audio`), heard by the ``spoken-prompt`` encoder (docs/audio.md).
    ``complete``: rewrite a typed prompt into a full caption first, for a generator trained only
    on those (the VAE and GAN; see ``Generator.prompt_completion``).
    ``output``: also write the outputs there (``out.png``, or ``out-1.png`` … for several; see
    :func:`save`), the path checked before any weights load. ``count``: run the inputs that many
    times (seeds continue), e.g. three pictures of one prompt.
    """
    if prompt_audio is not None:
        if prompt is not None:
            raise InputError("give a prompt or prompt_audio, not both")
        inputs: Any = read_spoken_prompts(prompt_audio)
        spec = spoken_spec(generator, size)
    elif prompt is None:
        raise InputError("no prompt: give a prompt (text) or prompt_audio (a spoken prompt's file)")
    else:
        inputs = Text(prompt)
        if generator is None and output is not None and Path(output).suffix.lower() in AudioFormat.suffixes:
            generator = DEFAULT_SOUND_GENERATOR  # a sound file asks for a sound
        spec = default_spec(generator, size, complete=complete)
    pipeline = pipeline_for(spec)
    if output is not None:
        check_output_path(output, pipeline.output_type)  # before any weights load
    result = pipeline.run(type(inputs).concat([inputs] * count), seed, progress=progress)
    if output is not None:
        _write_all(result, output)
    return result


def _given_inputs(source: "str | Path", record: dict, inputs: Any) -> Data:
    """``inputs`` given to :func:`reproduce` again, checked against the record's digests."""
    kind, digests = record.get("input_kind"), record.get("input_sha256")
    if kind is None or digests is None:
        raise ProvenanceError(
            f"{str(source)!r}: its record keeps its inputs itself (or predates input digests); "
            "reproduce it without giving inputs"
        )
    if isinstance(inputs, Data):
        data = inputs
    elif kind == "Audio":
        data = read_spoken_prompts(inputs)  # WAV/FLAC paths, read as generate(prompt_audio=...) read them
    else:
        raise ProvenanceError(f"{str(source)!r} was made from {kind} input: give it again as a loom {kind}")
    if data.kind != kind:
        raise ProvenanceError(f"{str(source)!r} was made from {kind} input, not {data.kind}")
    if len(data) != len(digests):
        raise ProvenanceError(f"{str(source)!r} was made from {len(digests)} input item(s); {len(data)} given")
    for i, want in enumerate(digests):
        if digest(data, i) != want:
            raise ProvenanceError(
                f"input {i + 1} is not the one {str(source)!r} was made from (its SHA-256 differs from the recorded "
                f"{want[:12]}…); give the same file, unchanged"
            )
    return data


def output_paths(path: "str | Path", count: int) -> list[Path]:
    """``out.png`` for one item; ``out-1.png`` … ``out-N.png`` for several."""
    path = Path(path)
    if count == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{i + 1}{path.suffix}") for i in range(count)]


def save(result: Result, path: "str | Path") -> list[Path]:
    """Write each output of ``result`` with its own provenance record (atomically): PNG for
    images, WAV or FLAC (by ``path``'s suffix) for audio."""
    check_output_path(path, type(result.output))
    return _write_all(result, path)


def _write_all(result: Result, path: "str | Path") -> list[Path]:
    paths = output_paths(path, len(result))
    for i, p in enumerate(paths):
        write(result.output, i, p, result.record(i))
    return paths


def reproduce(
    source: "str | Path", path: "str | Path | None" = None, progress: bool = True, inputs: Any = None
) -> Result:
    """Regenerate the output recorded in ``source`` (a file Loom wrote); write it to ``path`` if given.

    A record keeps text inputs themselves, and only a digest of other inputs (a spoken prompt's
    audio, say): give those again as ``inputs`` (a WAV/FLAC path, a list of paths, or the
    :class:`Audio`); they must match the recorded digest."""
    record = read_record(source)
    try:
        spec, recorded, seeds = record["spec"], record["inputs"], record["seeds"]
    except KeyError as err:
        raise ProvenanceError(f"{str(source)!r}: its Loom record lacks {err.args[0]!r}") from None
    if inputs is not None:
        inputs = _given_inputs(source, record, inputs)
    elif any(x is None for x in recorded):
        kind = record.get("input_kind")
        if kind == "Audio":
            raise ProvenanceError(
                f"{str(source)!r} was made from audio, which its record does not keep (only its digest): "
                f"give the same file again, e.g. `loom reproduce {source} -o OUT --input said.wav`"
            )
        raise ProvenanceError(f"{str(source)!r}: its record holds no replayable inputs")
    else:
        inputs = recorded
    pipeline = pipeline_for(spec)
    if path is not None:
        check_output_path(path, pipeline.output_type)  # before anything runs
    result = pipeline.run(inputs, seeds, progress=progress)
    if path is not None:
        _write_all(result, path)
    return result
