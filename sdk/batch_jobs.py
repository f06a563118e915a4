"""Batch jobs: a prompts file in, one output file per prompt out, resumable, with a manifest.

    loom batch vae --prompts prompts.txt -o out/                  # local engine
    loom batch chain.yaml --prompts prompts.jsonl -o out/ --engine ray

    report = loom.batch("vae", "prompts.txt", "out/")
    print(report.summary())

The prompts file is plain text (one prompt a line; blank lines are skipped) or, when its name ends in
``.jsonl`` / ``.ndjson``, JSON Lines with one object a line::

    {"prompt": "a red circle on a blue background", "seed": 7, "id": "red-circle",
     "params": {"vae": {"temperature": 0.8}}}

Only ``prompt`` is required. **Seeds**: the item at position *i* (0-based, counting items, not
blank lines) gets the seed ``seeds + i`` (``seeds`` is 0 unless given), unless its line names its own
``seed``; so rerunning the same file gives the same seeds. **Ids** default to the position from 1,
six digits (``000001``); an item's output is ``DIR/ID.png`` (``DIR/ID.wav`` for a chain that ends in
Audio). ``params`` overrides options of the chain's steps for that item, keyed by the step's
component name.

Every output is written atomically (temporary file + rename) with its provenance record; the
record leaves out timings and creation time (they go to the manifest) so that an item's file is
byte-identical however it ran: alone, in any batch, in any order, locally or on Ray. The core
runs every component on a fixed micro-batch shape (``Component.micro_batch``, padding the last
chunk), which is what makes the pixels identical; ``tests/test_batch.py`` proves it.

Resume is the default: a rerun removes temporary files a killed run left, skips every item whose
output exists, decodes completely and carries the record of this item (same chain, prompt and
seed), and makes the rest, so a truncated or stale output is made again. One bad item (a prompt
the chain rejects, a NaN output, params the chain refuses) is recorded in the manifest with its
error; the rest of the job goes on.

The manifest (``DIR/manifest.jsonl`` or ``DIR/manifest.parquet``) has one row per item, in file
order: ``id, prompt, seed, params, output, status, error, timings, worker``. ``status`` is
``ok`` (made by this run), ``skipped`` (a valid output from an earlier run), ``failed``, or
``pending`` (not reached: the run was interrupted). ``timings`` holds ``run_s`` (the item's share
of the chain's time), ``write_s`` and ``done_s`` (seconds from the job's start to its output).
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from loom.core.data import Audio, Data, Image
from loom.core.errors import ConfigError, InputError, LoomError, ProvenanceError
from loom.core.seeding import MAX_SEED

#: Engines a job runs on.
ENGINES = ("local", "ray")
#: Items per run of the chain (and per Ray task) unless told otherwise.
DEFAULT_BATCH_SIZE = 32
#: Manifest formats, by their file suffix.
MANIFEST_FORMATS = ("jsonl", "parquet")
#: Exit status of ``loom batch`` when the job finished but some items failed (1 is an error that
#: stopped the job, 2 a usage error).
EXIT_ITEMS_FAILED = 3
#: Digits of a default id (the item's position from 1).
ID_DIGITS = 6

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_JSONL_SUFFIXES = {".jsonl", ".ndjson"}
_KEYS = ("prompt", "seed", "id", "params")


# -- items ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    """One prompt of a job: its id (the output's file name), prompt, seed and per-item step options."""

    id: str
    prompt: str
    seed: int
    params: dict | None = None

    @property
    def params_key(self) -> str:
        return params_key(self.params)


def params_key(params: Mapping | None) -> str:
    """Items with the same key run on the same chain."""
    return json.dumps(params or {}, sort_keys=True)


def read_items(prompts: "str | Path | Sequence[str | Mapping]", seeds: "int | str | Sequence[int] | None" = 0) -> list[Item]:
    """The items of a prompts file (plain text or JSONL) or of a list of prompts / JSONL-like dicts.

    ``seeds``: a base (item *i* gets ``seeds + i``), one seed per item (a list, or ``"3,8,1"``), or
    None for 0. A line's own ``seed`` wins over both. A mistake names the line and what it accepts."""
    if isinstance(prompts, (str, Path)):
        path = Path(prompts)
        if not path.is_file():
            raise InputError(f"prompts file {str(path)!r} does not exist")
        where = str(path)
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() in _JSONL_SUFFIXES:
            entries = []
            for number, line in enumerate(text.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as err:
                    raise InputError(
                        f"{where} line {number}: not valid JSON ({err.msg}); each line of a .jsonl prompts file is "
                        f'an object such as {{"prompt": "a red circle", "seed": 3}}'
                    ) from None
                entries.append((f"{where} line {number}", value))
        else:
            entries = [(f"{where} line {n}", line.strip()) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
        if not entries:
            raise InputError(f"prompts file {where!r} holds no prompts (one prompt a line, or one JSON object a line for .jsonl)")
    elif isinstance(prompts, Sequence):
        entries = [(f"prompt {n}", value) for n, value in enumerate(prompts, start=1)]
        if not entries:
            raise InputError("no prompts: give a prompts file or a non-empty list of prompts")
    else:
        raise InputError(f"prompts must be a file path or a list of prompts, got {type(prompts).__name__}")

    seed_list = _seed_rule(seeds, len(entries))
    items, seen = [], {}
    for position, (where, value) in enumerate(entries):
        item = _item(value, where, position, seed_list[position])
        if item.id in seen:
            raise InputError(f"{where}: id {item.id!r} is already used by {seen[item.id]}; ids name the output files, so each must be unique")
        seen[item.id] = where
        items.append(item)
    return items


def _seed_rule(seeds: Any, count: int) -> list[int]:
    if seeds is None:
        seeds = 0
    if isinstance(seeds, str):
        text = seeds.strip()
        try:
            seeds = [int(s) for s in text.split(",")] if "," in text else int(text)
        except ValueError:
            raise InputError(f"seeds {seeds!r}: give a base seed (e.g. 0) or one seed per item separated by commas") from None
    if isinstance(seeds, bool):
        raise InputError(f"seeds must be an integer or a list of integers, got {seeds!r}")
    if isinstance(seeds, int):
        if not 0 <= seeds or seeds + count - 1 > MAX_SEED:
            raise InputError(f"base seed {seeds} is out of range: item seeds base..base+{count - 1} must lie in 0..2**63-1")
        return [seeds + i for i in range(count)]
    if isinstance(seeds, Sequence):
        seeds = list(seeds)
        if len(seeds) != count:
            raise InputError(f"got {len(seeds)} seeds for {count} prompts: give one seed per prompt, or one base seed")
        for s in seeds:
            _check_seed(s, "seeds")
        return seeds
    raise InputError(f"seeds must be an integer or a list of integers, got {type(seeds).__name__}")


def _check_seed(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise InputError(f"{where}: seed {value!r} is not an integer between 0 and 2**63-1")
    return value


def _item(value: Any, where: str, position: int, seed: int) -> Item:
    default_id = f"{position + 1:0{ID_DIGITS}d}"
    if isinstance(value, str):
        return Item(id=default_id, prompt=value, seed=seed)
    if not isinstance(value, Mapping):
        raise InputError(f"{where}: expected a prompt string or an object with a 'prompt', got {type(value).__name__}")
    unknown = [k for k in value if k not in _KEYS]
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r}; a line may hold {', '.join(_KEYS)} (only 'prompt' is required)")
    if "prompt" not in value:
        raise InputError(f"{where}: no 'prompt' key; every line needs one, e.g. {{\"prompt\": \"a red circle\"}}")
    prompt = value["prompt"]
    if not isinstance(prompt, str):
        raise InputError(f"{where}: 'prompt' must be a string, got {prompt!r}")
    if "seed" in value:
        seed = _check_seed(value["seed"], where)
    item_id = value.get("id", default_id)
    if not isinstance(item_id, str) or not _ID.match(item_id):
        raise InputError(
            f"{where}: id {item_id!r} cannot name a file; use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    params = value.get("params")
    if params is not None:
        if not isinstance(params, Mapping) or not all(isinstance(v, Mapping) for v in params.values()):
            raise InputError(
                f"{where}: 'params' must map a step's component name to its options, e.g. {{\"vae\": {{\"temperature\": 0.8}}}}"
            )
        params = {str(k): dict(v) for k, v in params.items()} or None
    return Item(id=item_id, prompt=prompt, seed=seed, params=params)


# -- chains --------------------------------------------------------------------------------------
def chain_spec(chain: Any = None, registry=None) -> dict:
    """The spec a job runs: a spec (mapping, PipelineSpec, or .yaml/.yml/.json file), or a generator
    name or trained folder, which gets the default chain (``loom.api.default_spec``; ``registry``
    says what the generator gives and takes)."""
    from loom.api import default_spec
    from loom.core.pipeline import PipelineSpec

    if chain is None:
        return default_spec(registry=registry)
    if isinstance(chain, (Mapping, PipelineSpec)):
        return PipelineSpec.load(chain).model_dump(mode="json")
    if isinstance(chain, (str, Path)) and Path(chain).suffix.lower() in {".yaml", ".yml", ".json"}:
        return PipelineSpec.load(Path(chain)).model_dump(mode="json")
    if isinstance(chain, (str, Path)):
        return default_spec(str(chain), registry=registry)
    raise InputError(f"chain must be a spec file, a spec mapping or a generator name, got {type(chain).__name__}")


def item_spec(base: dict, params: Mapping | None) -> dict:
    """``base`` with an item's ``params`` merged into the options of the steps they name."""
    if not params:
        return base
    steps = [dict(s) for s in base["steps"]]
    names = [s["component"] for s in steps]
    for name, options in params.items():
        if name not in names:
            raise ConfigError(f"params name {name!r}, which is no step of this chain (steps: {', '.join(names)})")
        for step in steps:
            if step["component"] == name:
                step["config"] = {**step.get("config", {}), **options}
    return {**base, "steps": steps}


# -- writing outputs -----------------------------------------------------------------------------
class OutputWriter:
    """Writes one data type's items as files. To support another type (e.g. Audio as WAV), subclass
    this and add an instance to :data:`WRITERS`."""

    data_type: type[Data] = Data
    suffix = ""

    def problem(self, data: Data, index: int) -> str | None:
        """Why item ``index`` of ``data`` must not be written (e.g. NaN values), or None."""
        return None

    def write(self, data: Data, index: int, path: Path, record: dict) -> None:
        """Write item ``index`` to ``path`` atomically, with ``record`` embedded."""
        raise NotImplementedError

    def read_record(self, path: Path) -> dict:
        """The record embedded in a complete output at ``path``; raises if it is incomplete or unreadable."""
        raise NotImplementedError


class PngWriter(OutputWriter):
    """Image items as PNG files with the provenance record in an iTXt chunk."""

    data_type = Image
    suffix = ".png"
    _END = b"\x00\x00\x00\x00IEND\xaeB`\x82"

    def problem(self, data: Image, index: int) -> str | None:
        import torch

        if not bool(torch.isfinite(data.pixels[index]).all()):
            return "the chain's output holds NaN or infinite values"
        return None

    def write(self, data: Image, index: int, path: Path, record: dict) -> None:
        data.save(path, index=index, record=record)

    def read_record(self, path: Path) -> dict:
        from PIL import Image as PILImage

        from loom.core.files import read_record

        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - len(self._END)))
            if f.read() != self._END:
                raise ProvenanceError(f"{str(path)!r} is truncated (no PNG end chunk)")
        with PILImage.open(path) as im:
            im.load()  # decodes every pixel: a damaged file raises here
        return read_record(path)


class WavWriter(OutputWriter):
    """Audio items as 16-bit WAV files with the provenance record in the LIST/INFO comment (ICMT)."""

    data_type = Audio
    suffix = ".wav"

    def problem(self, data: Audio, index: int) -> str | None:
        import torch

        if not bool(torch.isfinite(data.clip(index)).all()):
            return "the chain's output holds NaN or infinite values"
        return None

    def write(self, data: Audio, index: int, path: Path, record: dict) -> None:
        data.save(path, index=index, record=record)

    def read_record(self, path: Path) -> dict:
        import soundfile

        from loom.core.files import read_record, wav_chunks

        chunks = wav_chunks(path)  # raises when a chunk runs past the end of the file (truncated)
        if "data" not in chunks or "fmt " not in chunks:
            raise ProvenanceError(f"{str(path)!r} has no audio data")
        with soundfile.SoundFile(path) as f:
            frames = f.frames
            if len(f.read(dtype="int16")) != frames:  # decodes every sample: a damaged file raises or comes short
                raise ProvenanceError(f"{str(path)!r} holds fewer samples than its header says")
        return read_record(path)


#: The writer for each data type a job can write.
WRITERS: list[OutputWriter] = [PngWriter(), WavWriter()]


def writer_for(output_type: type[Data]) -> OutputWriter:
    """The writer for a chain's output type, or an error saying what can be written."""
    for writer in WRITERS:
        if issubclass(output_type, writer.data_type):
            return writer
    kinds = ", ".join(f"{w.data_type.kind} ({w.suffix[1:].upper()})" for w in WRITERS)
    raise InputError(
        f"batch jobs cannot write {output_type.kind} outputs yet (they write {kinds}); "
        f"end the chain in a step that gives {' or '.join(w.data_type.kind for w in WRITERS)}"
    )


def item_record(result, index: int) -> dict:
    """Item ``index``'s provenance record, with nothing that depends on how it ran (batch position,
    batch size, timings, creation time), so its file is the same bytes however it was made."""
    record = result.record(index)
    for key in ("item", "batch_size", "timings", "created"):
        record.pop(key, None)
    return record


def expected_record(pipeline, item: Item) -> dict:
    """What an output's record must hold for it to count as this item's output on resume."""
    from loom.core.pipeline import RECORD_VERSION

    return {
        "loom_record": RECORD_VERSION,
        "spec": pipeline.spec.model_dump(mode="json"),
        "inputs": [item.prompt],
        "seeds": [item.seed],
    }


# -- running items (the same code on every engine) -------------------------------------------------
def _row(item: Item, status: str, output: str | None = None, error: str | None = None, timings: dict | None = None,
         worker: str | None = None) -> dict:
    return {
        "id": item.id,
        "prompt": item.prompt,
        "seed": item.seed,
        "params": item.params,
        "output": output,
        "status": status,
        "error": error,
        "timings": timings,
        "worker": worker,
    }


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


class ItemRunner:
    """Runs items through a chain and writes their outputs: what the local engine does in its own
    process and what each Ray worker does. Pipelines are built once per distinct ``params``."""

    def __init__(self, spec: dict, out_dir: "str | Path", registry=None, started: float | None = None):
        self.spec = spec
        self.out_dir = Path(out_dir)
        self.registry = registry
        self.started = time.time() if started is None else started
        self.worker = f"{os.uname().nodename}:{os.getpid()}"
        self._pipelines: dict[str, Any] = {}
        self.writer = writer_for(self.pipeline(None).output_type)

    def pipeline(self, params: Mapping | None):
        """The (cached, unloaded until run) pipeline for items with ``params``."""
        key = params_key(params)
        if key not in self._pipelines:
            from loom.core.pipeline import Pipeline

            spec = item_spec(self.spec, params)
            if self.registry is None:
                from loom.api import pipeline_for

                self._pipelines[key] = pipeline_for(spec)  # shares weights with loom.generate in this process
            else:
                self._pipelines[key] = Pipeline.from_spec(spec, self.registry)
        return self._pipelines[key]

    def output_path(self, item: Item) -> Path:
        return self.out_dir / f"{item.id}{self.writer.suffix}"

    def load(self) -> "ItemRunner":
        """Load the job's chain now: a chain that cannot load stops the job, rather than failing each item."""
        self.pipeline(None).load(progress=False)
        return self

    def run(self, items: Sequence[Item]) -> list[dict]:
        """Make and write ``items``; one manifest row each, in order. Never raises for one item's fault."""
        rows: dict[str, dict] = {}
        groups: dict[str, list[Item]] = {}
        for item in items:
            groups.setdefault(item.params_key, []).append(item)
        for group in groups.values():
            try:
                pipeline = self.pipeline(group[0].params)
            except Exception as err:  # params the chain refuses: every item of the group fails alone
                for item in group:
                    rows[item.id] = _row(item, "failed", error=_describe(err), worker=self.worker)
                continue
            for row in self._run_group(pipeline, group):
                rows[row["id"]] = row
        return [rows[item.id] for item in items]

    def _run_group(self, pipeline, group: list[Item]) -> list[dict]:
        start = time.perf_counter()
        try:
            result = pipeline.run([i.prompt for i in group], [i.seed for i in group], progress=False)
        except Exception as err:
            if len(group) == 1:
                return [_row(group[0], "failed", error=_describe(err), worker=self.worker)]
            # Find the bad item(s): alone, each item gives the same output it would have in the batch.
            return [row for item in group for row in self._run_group(pipeline, [item])]
        share = (time.perf_counter() - start) / len(group)
        return [self._write(item, result, i, share) for i, item in enumerate(group)]

    def _write(self, item: Item, result, index: int, run_s: float) -> dict:
        problem = self.writer.problem(result.output, index)
        if problem:
            return _row(item, "failed", error=problem, timings={"run_s": round(run_s, 4)}, worker=self.worker)
        path = self.output_path(item)
        start = time.perf_counter()
        try:
            self.writer.write(result.output, index, path, item_record(result, index))
        except Exception as err:
            return _row(item, "failed", error=f"writing {path.name}: {_describe(err)}", worker=self.worker)
        timings = {
            "run_s": round(run_s, 4),
            "write_s": round(time.perf_counter() - start, 4),
            "done_s": round(time.time() - self.started, 3),
        }
        return _row(item, "ok", output=path.name, timings=timings, worker=self.worker)


# -- the job -------------------------------------------------------------------------------------
@dataclass
class BatchReport:
    """What a job did. ``rows`` is the manifest, one row per item in file order."""

    out_dir: Path
    manifest: Path
    engine: str
    rows: list[dict]
    seconds: float
    first_output_s: float | None = None
    temp_files_removed: int = 0
    counts: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for status in ("ok", "failed", "skipped", "pending"):
            self.counts[status] = sum(r["status"] == status for r in self.rows)

    @property
    def total(self) -> int:
        return len(self.rows)

    @property
    def made(self) -> int:
        return self.counts["ok"]

    @property
    def failed(self) -> int:
        return self.counts["failed"]

    @property
    def skipped(self) -> int:
        return self.counts["skipped"]

    @property
    def items_per_s(self) -> float:
        """Outputs made by this run per second of the job's wall time (start-up included)."""
        return self.made / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        first = f"; first output after {self.first_output_s:.1f} s" if self.first_output_s is not None else ""
        pending = f", {self.counts['pending']} not reached" if self.counts["pending"] else ""
        return (
            f"{self.total} items: {self.made} made, {self.failed} failed, {self.skipped} skipped{pending} "
            f"({self.engine}, {self.seconds:.1f} s, {self.items_per_s:.2f} items/s{first}); manifest {self.manifest}"
        )


def manifest_path(out_dir: Path, fmt: str) -> Path:
    return out_dir / f"manifest.{fmt}"


def remove_temp_files(out_dir: Path, names: set[str]) -> int:
    """Remove temporary files that an interrupted run left for the files in ``names`` (those that
    :func:`loom.core.files.atomic_path` makes: ``.NAME.RANDOM.tmp``). Returns how many."""
    removed = 0
    for path in out_dir.glob(".*.tmp"):
        name = path.name[1:-len(".tmp")].rpartition(".")[0]
        if name in names:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def write_manifest(path: Path, rows: list[dict]) -> Path:
    """Write the manifest atomically, as JSON Lines or (``.parquet``) Parquet."""
    from loom.core.files import atomic_path

    if path.suffix == ".parquet":
        pa, pq = _pyarrow()
        table = pa.Table.from_pylist(
            [{**r, "params": json.dumps(r["params"]) if r["params"] is not None else None} for r in rows],
            schema=pa.schema([
                ("id", pa.string()), ("prompt", pa.string()), ("seed", pa.int64()), ("params", pa.string()),
                ("output", pa.string()), ("status", pa.string()), ("error", pa.string()),
                ("timings", pa.struct([("run_s", pa.float64()), ("write_s", pa.float64()), ("done_s", pa.float64())])),
                ("worker", pa.string()),
            ]),
        )
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
        return path
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def read_manifest(path: Path) -> list[dict]:
    """The rows of a manifest written by :func:`write_manifest`."""
    if path.suffix == ".parquet":
        _, pq = _pyarrow()
        rows = pq.read_table(path).to_pylist()
        for r in rows:
            r["params"] = json.loads(r["params"]) if r["params"] else None
        return rows
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError("a Parquet manifest needs pyarrow: pip install pyarrow (or 'loom[ray]', which brings it)") from None
    return pa, pq


def batch(
    chain: Any,
    prompts: "str | Path | Sequence[str | Mapping]",
    out: "str | Path",
    *,
    engine: str = "local",
    address: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seeds: "int | str | Sequence[int] | None" = 0,
    workers: int | None = None,
    worker_cpus: float = 1,
    worker_gpus: float = 0,
    manifest: str = "jsonl",
    progress: bool = True,
    registry=None,
) -> BatchReport:
    """Run a batch job: every prompt in ``prompts`` becomes ``out/ID.png`` (``.wav`` for audio) with its provenance
    record, and ``out/manifest.jsonl`` gets one row per item. Rerunning resumes.

    ``chain``: a spec (file, mapping) or a generator name/folder (the default chain around it).
    ``prompts``: a plain-text or ``.jsonl`` file, or a list of prompts or JSONL-like dicts.
    ``engine``: ``"local"`` (this process) or ``"ray"`` (Ray Data; ``pip install 'loom[ray]'``);
    ``address`` joins an existing Ray cluster, otherwise one is started for the job and stopped after.
    ``batch_size``: items per run of the chain (and per Ray task); it does not change any output.
    ``seeds``: a base seed (item *i* gets ``seeds + i``) or one per item; a JSONL line's own seed wins.
    ``workers``, ``worker_cpus``, ``worker_gpus``: the Ray actor pool (default: as many workers as the
    cluster's CPUs allow). ``manifest``: ``"jsonl"`` or ``"parquet"``. ``registry``: the plugins to use
    (local engine only; Ray workers discover plugins through entry points).
    """
    from tqdm.auto import tqdm

    started_wall, started = time.time(), time.perf_counter()
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}: use 'local' (this process) or 'ray' (Ray Data)")
    if manifest not in MANIFEST_FORMATS:
        raise InputError(f"unknown manifest format {manifest!r}: use 'jsonl' or 'parquet'")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch size must be a whole number of at least 1, got {batch_size!r}")
    if engine == "local" and address:
        raise InputError("an address is for the ray engine: add --engine ray, or leave out --address")
    if engine == "ray":
        from loom.batch_ray import require_ray

        require_ray()
        if registry is not None:
            raise InputError("the ray engine loads plugins on each worker from entry points; it takes no registry")
    if manifest == "parquet":
        _pyarrow()

    spec = chain_spec(chain, registry)
    items = read_items(prompts, seeds)
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output folder {str(out_dir)!r} is a file; give a folder")
    runner = ItemRunner(spec, out_dir, registry=registry, started=started_wall)  # checks the chain; loads nothing
    out_dir.mkdir(parents=True, exist_ok=True)
    out_dir = runner.out_dir = out_dir.resolve()  # Ray workers get the absolute path
    manifest_file = manifest_path(out_dir, manifest)
    names = {runner.output_path(i).name for i in items} | {manifest_path(out_dir, f).name for f in MANIFEST_FORMATS}
    removed = remove_temp_files(out_dir, names)

    previous = {}
    for fmt in MANIFEST_FORMATS:  # an earlier run's timings, for the items this run skips
        try:
            previous.update({r["id"]: r for r in read_manifest(manifest_path(out_dir, fmt))})
        except Exception:
            pass
    rows: dict[str, dict] = {}
    todo: list[Item] = []
    for item in items:
        try:
            pipeline = runner.pipeline(item.params)
        except LoomError as err:
            rows[item.id] = _row(item, "failed", error=_describe(err))
            continue
        path = runner.output_path(item)
        if path.is_file() and _is_output_of(runner.writer, path, expected_record(pipeline, item)):
            before = previous.get(item.id) or {}
            rows[item.id] = _row(item, "skipped", output=path.name, timings=before.get("timings"), worker=before.get("worker"))
        else:
            todo.append(item)

    def finish() -> BatchReport:
        for item in items:
            rows.setdefault(item.id, _row(item, "pending"))
        ordered = [rows[item.id] for item in items]
        write_manifest(manifest_file, ordered)
        removed_now = removed + remove_temp_files(out_dir, names)  # a killed Ray worker's leftovers
        done = [r["timings"]["done_s"] for r in ordered if r["status"] == "ok" and r["timings"]]
        return BatchReport(
            out_dir=out_dir, manifest=manifest_file, engine=engine, rows=ordered,
            seconds=time.perf_counter() - started, first_output_s=min(done) if done else None,
            temp_files_removed=removed_now,
        )

    if todo and engine == "local":
        runner.load()  # before the bar starts, so that it shows the rate of making items
    bar = tqdm(total=len(todo), desc=f"batch ({engine})", unit="item", disable=not progress or not todo, dynamic_ncols=True)

    def take(new_rows: list[dict]) -> None:
        for row in new_rows:
            rows[row["id"]] = row
        bar.update(len(new_rows))
        failed = sum(r["status"] == "failed" for r in rows.values())
        if failed:
            bar.set_postfix_str(f"{failed} failed", refresh=False)

    try:
        if todo and engine == "local":
            for start in range(0, len(todo), batch_size):
                take(runner.run(todo[start:start + batch_size]))
        elif todo:
            from loom.batch_ray import run_on_ray

            run_on_ray(
                todo, spec, out_dir, batch_size=batch_size, address=address, workers=workers,
                worker_cpus=worker_cpus, worker_gpus=worker_gpus, started=started_wall, on_rows=take,
            )
    finally:
        bar.close()
        report = finish()  # also on Ctrl-C: what was made is in the manifest, the rest is 'pending'
    return report


def _is_output_of(writer: OutputWriter, path: Path, expected: dict) -> bool:
    try:
        record = writer.read_record(path)
    except Exception:  # unreadable, truncated, damaged, no record: made again
        return False
    return all(record.get(key) == value for key, value in expected.items())

