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
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

# what every engine runs, kept here too as this module's public names (tests, docs and plugins use them)
from loom.batch_items import (  # noqa: F401
    Item,
    ItemRunner,
    describe,
    expected_record,
    item_record,
    item_spec,
    manifest_row,
    params_key,
    writer_for,
)
from loom.batch_ray import require_ray, run_on_ray
from loom.core.errors import InputError, LoomError
from loom.core.seeding import item_seeds
from loom.outputs import OutputFormat, check_output_folder

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
_KEYS = ("prompt", "seed", "id", "params", "image", "mask")
#: The keys of a JSONL line that name an image file the item's chain takes (relative to the prompts file's folder).
_IMAGE_KEYS = ("image", "mask")


# -- prompts files --------------------------------------------------------------------------------
def read_items(
    prompts: "str | Path | Sequence[str | Mapping]", seeds: "int | str | Sequence[int] | None" = 0
) -> list[Item]:
    """The items of a prompts file (plain text or JSONL) or of a list of prompts / JSONL-like dicts.

    ``seeds``: a base (item *i* gets ``seeds + i``), one seed per item (a list, or ``"3,8,1"``), or
    None for 0. A line's own ``seed`` wins over both. A mistake names the line and what it accepts."""
    folder = Path(".")  # where a line's image paths are found
    if isinstance(prompts, (str, Path)):
        path = Path(prompts)
        folder = path.parent
        if not path.is_file():
            raise InputError(f"prompts file {str(path)!r} does not exist")
        where = str(path)
        text = read_prompts_text(path)
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
            entries = [
                (f"{where} line {n}", line.strip()) for n, line in enumerate(text.splitlines(), start=1) if line.strip()
            ]
        if not entries:
            raise InputError(
                f"prompts file {where!r} holds no prompts (one prompt a line, or one JSON object a line for .jsonl)"
            )
    elif isinstance(prompts, Sequence):
        entries = [(f"prompt {n}", value) for n, value in enumerate(prompts, start=1)]
        if not entries:
            raise InputError("no prompts: give a prompts file or a non-empty list of prompts")
    else:
        raise InputError(f"prompts must be a file path or a list of prompts, got {type(prompts).__name__}")

    seed_list = _seed_list(seeds, len(entries))
    items, seen = [], {}
    for position, (where, value) in enumerate(entries):
        item = _item(value, where, position, seed_list[position], folder)
        if item.id in seen:
            raise InputError(
                f"{where}: id {item.id!r} is already used by {seen[item.id]}; ids name the output files, so each must be unique"
            )
        seen[item.id] = where
        items.append(item)
    return items


def read_prompts_text(path: "str | Path") -> str:
    """The text of a prompts file, which must be UTF-8 (a byte-order mark is dropped); otherwise an
    InputError naming the file and the line of the first byte that is not."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise InputError(
            f"prompts file {str(path)!r} is not UTF-8 text (line {line}: byte {data[err.start]:#04x}); save it as UTF-8"
        ) from None


def _seed_list(seeds: Any, count: int) -> list[int]:
    """One seed per item by :func:`loom.core.seeding.item_seeds`, except that a job's seeds are
    never drawn at random (None is 0, so a rerun gives the same seeds), and that ``"3,8,1"`` (as
    ``--seeds`` gives it) is a list and ``"5"`` a base."""
    if seeds is None:
        seeds = 0
    if isinstance(seeds, str):
        text = seeds.strip()
        try:
            seeds = [int(s) for s in text.split(",")] if "," in text else int(text)
        except ValueError:
            raise InputError(
                f"seeds {seeds!r}: give a base seed (e.g. 0) or one seed per item separated by commas"
            ) from None
    return item_seeds(seeds, count)


def _check_seed(value: Any, where: str) -> int:
    """A line's own seed, checked by the same rule as every seed."""
    try:
        return item_seeds([value], 1)[0]
    except InputError as err:
        raise InputError(f"{where}: {err}") from None


def _item(value: Any, where: str, position: int, seed: int, folder: Path = Path(".")) -> Item:
    default_id = f"{position + 1:0{ID_DIGITS}d}"
    if isinstance(value, str):
        return Item(id=default_id, prompt=value, seed=seed)
    if not isinstance(value, Mapping):
        raise InputError(f"{where}: expected a prompt string or an object with a 'prompt', got {type(value).__name__}")
    unknown = [k for k in value if k not in _KEYS]
    if unknown:
        raise InputError(
            f"{where}: unknown key {unknown[0]!r}; a line may hold {', '.join(_KEYS)} (only 'prompt' is required)"
        )
    if "prompt" not in value:
        raise InputError(f'{where}: no \'prompt\' key; every line needs one, e.g. {{"prompt": "a red circle"}}')
    prompt = value["prompt"]
    if not isinstance(prompt, str):
        raise InputError(f"{where}: 'prompt' must be a string, got {prompt!r}")
    if "seed" in value:
        seed = _check_seed(value["seed"], where)
    item_id = value.get("id", default_id)
    if not isinstance(item_id, str) or not _ID.fullmatch(item_id):
        raise InputError(
            f"{where}: id {item_id!r} cannot name a file; use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    params = value.get("params")
    if params is not None:
        if not isinstance(params, Mapping) or not all(isinstance(v, Mapping) for v in params.values()):
            raise InputError(
                f'{where}: \'params\' must map a step\'s component name to its options, e.g. {{"vae": {{"temperature": 0.8}}}}'
            )
        params = {str(k): dict(v) for k, v in params.items()} or None
    return Item(id=item_id, prompt=prompt, seed=seed, params=params, given=_given_paths(value, where, folder))


def _given_paths(value: Mapping, where: str, folder: Path) -> dict | None:
    """A line's image files (``image``, ``mask``) by name, each relative to ``folder`` and checked to exist; they are
    read when the item runs (:func:`loom.outputs.read_images`), an unreadable one failing its item alone."""
    given = {}
    for key in _IMAGE_KEYS:
        if key not in value:
            continue
        if not isinstance(value[key], str) or not value[key].strip():
            raise InputError(f"{where}: {key!r} must be the path of an image file, got {value[key]!r}")
        path = folder / value[key]
        if not path.is_file():
            raise InputError(
                f"{where}: {key} file {str(path)!r} does not exist (paths are relative to the prompts file)"
            )
        given[key] = str(path.resolve())  # a Ray worker may run in another folder
    return given or None


# -- chains --------------------------------------------------------------------------------------
def chain_spec(chain: Any = None, registry=None) -> dict:
    """The spec a job runs: a spec (mapping, PipelineSpec, or .yaml/.yml/.json file), or a generator
    name or trained folder, which gets the default chain (``loom.api.default_spec``; ``registry``
    says what the generator gives and takes)."""
    from loom.api import default_spec
    from loom.chains import is_spec_file, read_spec
    from loom.core.pipeline import PipelineSpec

    if chain is None:
        return default_spec(registry=registry)
    if isinstance(chain, (Mapping, PipelineSpec)) or is_spec_file(chain):
        return read_spec(chain).model_dump(mode="json")
    if isinstance(chain, (str, Path)):
        return default_spec(str(chain), registry=registry)
    raise InputError(f"chain must be a spec file, a spec mapping or a generator name, got {type(chain).__name__}")


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
        name = path.name[1 : -len(".tmp")].rpartition(".")[0]
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
            schema=pa.schema(
                [
                    ("id", pa.string()),
                    ("prompt", pa.string()),
                    ("seed", pa.int64()),
                    ("params", pa.string()),
                    ("output", pa.string()),
                    ("status", pa.string()),
                    ("error", pa.string()),
                    (
                        "timings",
                        pa.struct([("run_s", pa.float64()), ("write_s", pa.float64()), ("done_s", pa.float64())]),
                    ),
                    ("worker", pa.string()),
                ]
            ),
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
        raise InputError(
            "a Parquet manifest needs pyarrow: pip install pyarrow (or 'loom[ray]', which brings it)"
        ) from None
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
    job = BatchJob(engine, address, batch_size, workers, worker_cpus, worker_gpus, manifest, progress, registry)
    job.check_options()
    job.read_items(chain, prompts, seeds, out)
    job.plan()
    return job.run()


@dataclass
class BatchJob:
    """One run of :func:`batch` (its options, as it documents them), in phases called in order:
    :meth:`check_options`, :meth:`read_items` (the chain, the items and the output folder),
    :meth:`plan` (skip every valid output of an earlier run), :meth:`run` (chunks on the local
    engine or on Ray), which ends, also on Ctrl-C, in :meth:`finish` (the manifest and the report)."""

    engine: str = "local"
    address: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    workers: int | None = None
    worker_cpus: float = 1
    worker_gpus: float = 0
    manifest: str = "jsonl"
    progress: bool = True
    registry: Any = None

    def __post_init__(self) -> None:
        self.started_wall, self.started = time.time(), time.perf_counter()
        self.rows: dict[str, dict] = {}  # by item id: what happened to each item so far
        self.todo: list[Item] = []

    def check_options(self) -> None:
        """Refuse options that do not fit together, before any prompt is read."""
        if self.engine not in ENGINES:
            raise InputError(f"unknown engine {self.engine!r}: use 'local' (this process) or 'ray' (Ray Data)")
        if self.manifest not in MANIFEST_FORMATS:
            raise InputError(f"unknown manifest format {self.manifest!r}: use 'jsonl' or 'parquet'")
        size = self.batch_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise InputError(f"batch size must be a whole number of at least 1, got {size!r}")
        if self.engine == "local" and self.address:
            raise InputError("an address is for the ray engine: add --engine ray, or leave out --address")
        if self.engine == "ray":
            require_ray()
            if self.registry is not None:
                raise InputError("the ray engine loads plugins on each worker from entry points; it takes no registry")
        if self.manifest == "parquet":
            _pyarrow()

    def read_items(self, chain: Any, prompts, seeds, out: "str | Path") -> None:
        """The chain's spec, the items, and the output folder, cleared of an interrupted run's
        temporary files; the chain is checked but nothing is loaded."""
        self.spec = chain_spec(chain, self.registry)
        self.items = read_items(prompts, seeds)
        out_dir = Path(out)
        check_output_folder(out_dir)  # a file there, or a read-only folder, fails before anything loads
        self.runner = ItemRunner(self.spec, out_dir, registry=self.registry, started=self.started_wall)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.out_dir = self.runner.out_dir = out_dir.resolve()  # Ray workers get the absolute path
        self.manifest_file = manifest_path(self.out_dir, self.manifest)
        self.names = {self.runner.output_path(i).name for i in self.items}
        self.names |= {manifest_path(self.out_dir, f).name for f in MANIFEST_FORMATS}
        self.temp_files_removed = remove_temp_files(self.out_dir, self.names)

    def plan(self) -> None:
        """Skip each item whose output an earlier run made and that is still valid (keeping that
        run's timings); fail each item whose params the chain refuses; the rest are to do."""
        previous = self._previous_rows()
        for item in self.items:
            try:
                pipeline = self.runner.pipeline(item.params)
            except LoomError as err:
                self.rows[item.id] = manifest_row(item, "failed", error=describe(err))
                continue
            path = self.runner.output_path(item)
            if path.is_file() and _is_output_of(self.runner.writer, path, expected_record(pipeline, item)):
                before = previous.get(item.id) or {}
                self.rows[item.id] = manifest_row(
                    item, "skipped", output=path.name, timings=before.get("timings"), worker=before.get("worker")
                )
            else:
                self.todo.append(item)

    def _previous_rows(self) -> dict[str, dict]:
        previous = {}
        for fmt in MANIFEST_FORMATS:  # an earlier run's timings, for the items this run skips
            try:
                previous.update({r["id"]: r for r in read_manifest(manifest_path(self.out_dir, fmt))})
            except Exception:
                pass
        return previous

    def run(self) -> BatchReport:
        """Make the items to do, a chunk at a time; whatever happens (a Ctrl-C included), what was
        made is in the manifest and the rest is 'pending'."""
        from tqdm.auto import tqdm

        local = self.engine == "local"
        if self.todo and local:
            self.runner.load()  # before the bar starts, so that it shows the rate of making items
        self.bar = tqdm(
            total=len(self.todo),
            desc=f"batch ({self.engine})",
            unit="item",
            disable=not self.progress or not self.todo,
            dynamic_ncols=True,
        )
        try:
            if self.todo and local:
                for start in range(0, len(self.todo), self.batch_size):
                    self.take(self.runner.run(self.todo[start : start + self.batch_size]))
            elif self.todo:
                run_on_ray(self, on_rows=self.take)
        finally:
            self.bar.close()
            report = self.finish()
        return report

    def take(self, new_rows: list[dict]) -> None:
        """Record finished items' rows and show them on the bar."""
        for row in new_rows:
            self.rows[row["id"]] = row
        self.bar.update(len(new_rows))
        failed = sum(r["status"] == "failed" for r in self.rows.values())
        if failed:
            self.bar.set_postfix_str(f"{failed} failed", refresh=False)

    def finish(self) -> BatchReport:
        """Write the manifest, one row per item in file order, and report."""
        for item in self.items:
            self.rows.setdefault(item.id, manifest_row(item, "pending"))
        ordered = [self.rows[item.id] for item in self.items]
        write_manifest(self.manifest_file, ordered)
        removed = self.temp_files_removed + remove_temp_files(
            self.out_dir, self.names
        )  # a killed Ray worker's leftovers
        done = [r["timings"]["done_s"] for r in ordered if r["status"] == "ok" and r["timings"]]
        return BatchReport(
            out_dir=self.out_dir,
            manifest=self.manifest_file,
            engine=self.engine,
            rows=ordered,
            seconds=time.perf_counter() - self.started,
            first_output_s=min(done) if done else None,
            temp_files_removed=removed,
        )


def _is_output_of(writer: OutputFormat, path: Path, expected: dict) -> bool:
    try:
        record = writer.verify(path)
    except Exception:  # unreadable, truncated, damaged, no record: made again
        return False
    return all(record.get(key) == value for key, value in expected.items())
