"""The calls an app developer makes: generate, save, reproduce."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from loom.chains import Bar, Pipeline, read_spec
from loom.core import Audio, Data, Image, InputError, ProvenanceError, Result, Text
from loom.core.pipeline import Report
from loom.core.seeding import item_seeds
from loom.limits import current, pixels_of
from loom.outputs import (
    AudioFormat,
    check_output_path,
    difference,
    format_for,
    read_audio,
    read_images,
    read_record,
    write,
)
from loom.records import digest, replay_problem, weights_problem

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
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
        except ValueError as err:  # not UTF-8, or not JSON: a damaged copy
            raise InputError(f"{str(config)!r} is not valid JSON ({err}); copy the trained folder again") from None
        family = data.get("family") if isinstance(data, dict) else None
        if not family or not isinstance(family, str):
            raise InputError(
                f"{str(config)!r} names no model family ('family' key): it is not a trained Loom generator"
            )
        return {"component": family, "config": {"weights": str(folder.resolve())}}
    return {"component": generator}


def default_spec(
    generator: str | None = None,
    size: int | None = DEFAULT_SIZE,
    registry=None,
    complete: bool = True,
    edit: bool = False,
) -> dict:
    """Text encoder → ``generator`` → resize to ``size`` (no resize when ``size`` is None).

    The chain fits the generator's types (looked up in ``registry``, default: the installed
    plugins; nothing loads): a generator that takes Text directly gets no text encoder, and one
    that does not give an Image (an Audio generator) gets no resize. An unknown generator keeps
    the image chain, so that building it names the unknown step. With ``complete``, a generator
    that names a ``prompt_completion`` gets it first, so a typed prompt reaches it as the kind
    of caption it was trained on; not for an ``edit`` (a request with an image), whose prompt describes
    an image that exists: what it leaves unsaid is the image's, not the world's to draw. Loom's own steps go by qualified name (``plugin:component``), so
    that a third-party plugin's component of the same name never takes their place."""
    step = generator_step(generator)
    cls = _component_class(step["component"], registry)
    text_encoder = {"component": "text-encoder:text-encoder"}
    steps = [] if cls is not None and issubclass(Text, cls.input_type) else [text_encoder]
    if complete and not edit and getattr(cls, "prompt_completion", None):
        steps.insert(0, {"component": cls.prompt_completion})
    steps.append(step)
    if size and (cls is None or issubclass(cls.output_type, Image)):
        steps.append({"component": "image-postprocessors:resize", "config": {"size": size}})
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
    (no resize when ``size`` is None): the chain for a spoken prompt. Loom's own steps by qualified name."""
    steps = [{"component": "spoken-prompt:spoken-prompt"}, generator_step(generator)]
    if size:
        steps.append({"component": "image-postprocessors:resize", "config": {"size": size}})
    return {"steps": steps}


def read_spoken_prompts(prompt_audio: Any) -> Audio:
    """``prompt_audio`` (a WAV or FLAC path, a list of paths, or an :class:`Audio`) as one Audio
    batch. A prompt longer than the ``audio_seconds`` limit is refused, a file's from its header
    before it is decoded."""
    if isinstance(prompt_audio, Audio):
        for i in range(len(prompt_audio)):
            seconds = prompt_audio.clip(i).shape[-1] / prompt_audio.sample_rate
            current().check("audio_seconds", seconds, f"spoken prompt {i + 1}")
        return prompt_audio
    paths = [prompt_audio] if isinstance(prompt_audio, (str, Path)) else list(prompt_audio)
    if not paths:
        raise InputError("prompt_audio: no files given")
    for path in paths:
        _check_seconds(path)
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


def _check_seconds(path: "str | Path") -> None:
    """Refuse a spoken prompt's file over the ``audio_seconds`` limit, from its header alone."""
    import soundfile

    try:
        info = soundfile.info(str(path))
    except (RuntimeError, OSError):
        return  # not a readable audio file: read_audio says so in its own words
    if info.samplerate > 0:
        current().check("audio_seconds", info.frames / info.samplerate, f"spoken prompt {str(path)!r}")


def generate(
    prompt: str | Sequence[str] | None = None,
    seed: Any = None,
    *,
    generator: str | None = None,
    size: int | None = DEFAULT_SIZE,
    progress: "bool | Report" = True,
    prompt_audio: Any = None,
    complete: bool = True,
    output: "str | Path | None" = None,
    count: int = 1,
    image: Any = None,
    mask: Any = None,
    strength: float | None = None,
    control: Any = None,
    adapters: Sequence[Any] = (),
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
    :func:`save`), the path checked before any weights load; each is written as soon as its chunk
    is made (:func:`run_in_chunks`). ``count``: run the inputs that many times (seeds continue),
    e.g. three pictures of one prompt. ``progress``: a bar on the terminal (True), none (False),
    or a callable told ``(done, total, note)`` in items as the work goes (e.g. to drive your own bar).
    ``image``, ``mask``: for a generator that edits or repaints (its steps ``take`` them): an image
    file, a PIL image or a loom :class:`Image`, or a list of them, one per prompt
    (:func:`loom.outputs.read_images`; a mask is grey, white = repaint). ``strength``: the
    ``strength`` option of every step that has one (how far an edit may move from the image).
    ``control``: a control image for a step that takes one (``sd-controlnet``), read as ``image`` is.
    ``adapters``: LoRA adapters (``{"path": file, "scale": 0.8}`` or a path, scale 1) for every step
    that takes them (docs/adapters.md); the record keeps each file's SHA-256 and scale.

    A request over :mod:`loom.limits` (items = prompts × count, pixels = size², seconds of a
    spoken prompt, pixels of a given image) is refused before any weights load, and so is an
    unreadable image or one the chain does not take.
    """
    check_request(prompt, prompt_audio, size, count)
    if prompt_audio is not None:
        spec = spoken_spec(generator, size)
    else:
        if generator is None and output is not None and Path(output).suffix.lower() in AudioFormat.suffixes:
            generator = DEFAULT_SOUND_GENERATOR  # a sound file asks for a sound
        spec = default_spec(generator, size, complete=complete, edit=image is not None)
    if strength is not None:
        spec = with_strength(spec, strength)
    if adapters:
        spec = with_adapters(spec, adapters)
    pipeline = pipeline_for(spec)
    if output is not None:
        check_output_path(output, pipeline.output_type)  # before any weights load
    inputs: Data = read_spoken_prompts(prompt_audio) if prompt_audio is not None else Text(prompt)
    given = pipeline.check_given(read_images({"image": image, "mask": mask, "control": control}), len(inputs))
    given = {name: type(data).concat([data] * count) for name, data in given.items()}  # as the inputs repeat
    paths = None if output is None else output_paths(output, len(inputs) * count)
    return run_in_chunks(pipeline, type(inputs).concat([inputs] * count), seed, paths, progress, given)


def with_strength(spec: dict, strength: Any, registry=None) -> dict:
    """``spec`` with option ``strength`` set on every step whose Config has one (the value is checked when the chain
    is built); an InputError when no step has it."""
    return with_option(spec, "strength", strength, "give a strength only to a generator that edits images", registry)


def with_adapters(spec: dict, adapters: Any, registry=None) -> dict:
    """``spec`` with LoRA ``adapters`` (``[{path, scale}]``, or paths) on every step that takes them."""
    return with_option(spec, "adapters", list(adapters), "give adapters only to a generator that takes them", registry)


def with_option(spec: dict, option: str, value: Any, hint: str, registry=None) -> dict:
    """``spec`` with ``option`` set to ``value`` on every step whose Config has it (the value is checked when the
    chain is built); an InputError naming the steps, then ``hint``, when no step has it."""
    steps, found = [], False
    for step in spec["steps"]:
        cls = _component_class(step["component"], registry)
        if cls is not None and option in cls.Config.model_fields:
            step, found = {**step, "config": {**step.get("config", {}), option: value}}, True
        steps.append(step)
    if not found:
        names = ", ".join(repr(s["component"]) for s in spec["steps"])
        raise InputError(f"no step of this chain takes {option} (steps: {names}); {hint}")
    return {**spec, "steps": steps}


def check_request(prompt: Any, prompt_audio: Any, size: int | None, count: int) -> None:
    """The checks of :func:`generate` (and of ``loom serve``'s requests) that need nothing loaded: one kind of prompt, the items
    (prompts × count) and the pixels of an image of ``size``."""
    if prompt_audio is not None and prompt is not None:
        raise InputError("give a prompt or prompt_audio, not both")
    if prompt_audio is None and prompt is None:
        raise InputError("no prompt: give a prompt (text) or prompt_audio (a spoken prompt's file)")
    given = prompt if prompt_audio is None else prompt_audio
    prompts = 1 if isinstance(given, (str, Path)) else len(given)
    limits = current()
    limits.check("items", prompts * count, f"{prompts} prompt(s) × count {count}")
    if size:
        limits.check("pixels", pixels_of(size) or 0, f"an image of size {size} ({size} × {size})")


def chunk_items(pipeline: Pipeline, n: int) -> int:
    """Items per chunk of :func:`run_in_chunks`: the chain's largest micro-batch (a smaller chunk
    would be padded up to it anyway, so chunking costs no work); all ``n`` at once when a
    component's output depends on its batch (``capabilities.batchable`` False)."""
    if not all(type(c).capabilities.batchable for c in pipeline.components):
        return max(n, 1)
    return max([c.micro_batch for c in pipeline.components if c.micro_batch] or [1])


def run_in_chunks(
    pipeline: Pipeline,
    inputs: Data,
    seed: Any,
    paths: "list[Path] | None",
    progress: "bool | Report" = True,
    given: "dict[str, Data] | None" = None,
) -> Result:
    """``pipeline`` run on ``inputs`` (and the named inputs ``given``, e.g. an image) a chunk at a
    time (:func:`chunk_items`), each chunk's outputs written to their ``paths`` (with their records)
    as soon as it is made: a long run leaves its first files early, and an interrupted one keeps
    those it finished. Batch invariance makes the outputs, seeds and records those of one whole run
    (but timings)."""
    n = len(inputs)
    given = pipeline.check_given(given or {}, n)  # before anything loads
    seeds = item_seeds(seed, n)
    size = chunk_items(pipeline, n)
    parts: list[Result] = []
    bars = progress is True  # a callable is told the items' progress instead of a bar
    with Bar("loading", "step", bars) as loading, Bar("generating", "item", bars) as shown:
        bar = progress if callable(progress) else shown
        pipeline.load(loading)
        for start in range(0, n, size):
            idx = list(range(start, min(start + size, n)))

            def report(done: float, total: float, note: str, k: int = len(idx), before: int = start) -> None:
                bar(done + before * total / k, n * total / k, note)  # this chunk's work as part of the whole

            chunk_given = {name: data.take(idx) for name, data in given.items()}
            part = pipeline.run(inputs.take(idx), [seeds[i] for i in idx], progress=report, **chunk_given)
            for j, i in enumerate(idx):
                if paths is not None:
                    paths[i].parent.mkdir(parents=True, exist_ok=True)  # made once there is something to put in it
                    write(part.output, j, paths[i], {**part.record(j), "item": i, "batch_size": n})
            parts.append(part)
    return _joined(parts)


def _joined(parts: list[Result]) -> Result:
    """One Result from the Results of consecutive chunks."""
    provenance = dict(parts[-1].provenance)
    for key in Result.PER_ITEM:
        if key in provenance:
            provenance[key] = [x for part in parts for x in part.provenance[key]]
    timings = [part.provenance["timings"] for part in parts]
    steps = [round(sum(step), 4) for step in zip(*(t["steps_s"] for t in timings))]
    provenance["timings"] = {**timings[-1], "steps_s": steps, "run_s": round(sum(steps), 4)}
    outputs = [part.output for part in parts]  # one part is kept as it is: joining would copy it
    return Result(output=outputs[0] if len(outputs) == 1 else type(outputs[0]).concat(outputs), provenance=provenance)


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


def _given_again(source: "str | Path", record: dict, given: dict) -> dict[str, Data]:
    """The named inputs (image, mask) given to :func:`reproduce` again, read and checked against the digests the
    record keeps: each one it was made from must be given, unchanged, and no other."""
    recorded = record.get("given") or []
    if not isinstance(recorded, list) or not all(isinstance(x, dict) for x in recorded):
        raise ProvenanceError(f"{str(source)!r}: its record's 'given' is not a list of one mapping per item")
    names = sorted({name for item in recorded for name in item})
    given = {name: value for name, value in given.items() if value is not None}
    missing = [name for name in names if name not in given]
    if missing:
        flags = " ".join(f"--{name} FILE" for name in missing)
        raise ProvenanceError(
            f"{str(source)!r} was made from {' and '.join(missing)}, which its record keeps only as digests: give "
            f"the same files again, e.g. `loom reproduce {source} -o OUT {flags}`"
        )
    for name in given:
        if name not in names:
            raise ProvenanceError(f"{str(source)!r} was made without {name}: leave it out")
    data = read_images(given)
    for name, batch in data.items():
        if len(batch) not in (1, len(recorded)):
            raise ProvenanceError(f"{str(source)!r} was made from {len(recorded)} {name} item(s); {len(batch)} given")
        label = str(given[name]) if isinstance(given[name], (str, Path)) else name
        for i, item in enumerate(recorded):
            want = str((item.get(name) or {}).get("sha256"))
            if digest(batch, min(i, len(batch) - 1)) != want:
                raise ProvenanceError(
                    f"{name} {label!r} is not the one {str(source)!r} was made from (its SHA-256 differs from the "
                    f"recorded {want[:12]}…); give the same file, unchanged"
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
    source: "str | Path",
    path: "str | Path | None" = None,
    progress: bool = True,
    inputs: Any = None,
    *,
    allow_download: bool = False,
    check: bool = False,
    **given: Any,
) -> Result:
    """Regenerate the output recorded in ``source`` (a file Loom wrote); write it to ``path`` if given.

    A record keeps text inputs themselves, and only a digest of other inputs (a spoken prompt's
    audio, say): give those again as ``inputs`` (a WAV/FLAC path, a list of paths, or the
    :class:`Audio`); they must match the recorded digest. The same holds for the named inputs a record
    keeps digests of (``image=``, ``mask=``, ``control=``: the files given again, as :func:`generate` took them).

    A record is data, checked before anything loads: its spec must be a mapping of steps naming
    no Hugging Face hub id (nor ``download: true``) unless ``allow_download``, it may ask for at
    most the ``items`` limit of outputs (:mod:`loom.limits`), and each step's weights files must
    have the SHA-256 it recorded. ``check``: compare the output made with ``source``'s pixels or
    samples; a ProvenanceError says how far they differ (after ``path`` is written)."""
    record = read_record(source)
    spec, recorded, seeds = _replayable(source, record, allow_download)
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
    given = _given_again(source, record, given)
    pipeline = pipeline_for(spec)
    problem = weights_problem(pipeline, record)
    if problem:
        raise ProvenanceError(f"{str(source)!r}: {problem}; Loom replays a record only on the weights it was made with")
    if path is not None:
        check_output_path(path, pipeline.output_type)  # before anything runs
    result = pipeline.run(inputs, seeds, progress=progress, **given)
    if path is not None:
        _write_all(result, path)
    if check:
        _check_same(source, result)
    return result


def _replayable(source: "str | Path", record: dict, allow_download: bool) -> tuple[dict, list, list]:
    """The record's spec, inputs and seeds, if it is safe to replay (:func:`loom.records.replay_problem`)
    and asks for no more outputs than the ``items`` limit. With ``allow_download``, steps that have a
    ``download`` option get it on, so that a hub id not in the cache is fetched."""
    from loom.limits import current

    try:
        spec, recorded, seeds = record["spec"], record["inputs"], record["seeds"]
    except KeyError as err:
        raise ProvenanceError(f"{str(source)!r}: its Loom record lacks {err.args[0]!r}") from None
    problem = replay_problem(spec, allow_download)
    if problem:
        hint = "" if replay_problem(spec, True) else "; pass --allow-download (allow_download=True) to use hub models"
        raise ProvenanceError(f"{str(source)!r}: its record is not safe to replay: {problem}{hint}")
    if not isinstance(recorded, list) or not isinstance(seeds, list) or len(recorded) != len(seeds):
        raise ProvenanceError(f"{str(source)!r}: its record's inputs and seeds are not two lists of one length")
    current().check("items", len(recorded), f"the number of outputs {str(source)!r}'s record asks for")
    if allow_download:
        steps = [
            {**s, "config": {**s["config"], "download": True}} if "download" in (s.get("config") or {}) else s
            for s in spec["steps"]
        ]
        spec = {**spec, "steps": steps}
    return spec, recorded, seeds


def _check_same(source: "str | Path", result: Result) -> None:
    """A ProvenanceError unless ``result``'s one output has the pixels or samples stored in ``source``."""
    if len(result) != 1:
        raise ProvenanceError(f"{str(source)!r}: its record made {len(result)} outputs; a check compares one")
    diff = difference(source, result.output, 0)
    if diff == float("inf"):
        raise ProvenanceError(f"differs from {str(source)!r}: the output made now has another shape")
    if diff:
        name = format_for(type(result.output)).values_name
        raise ProvenanceError(f"differs from {str(source)!r}: max diff {diff:g} in its {name}")
