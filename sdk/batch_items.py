"""The items of a batch job and what every engine does with them: an :class:`Item`, its manifest
:func:`manifest_row`, the output format of each data type (from :mod:`loom.outputs`), and the :class:`ItemRunner` that makes
and writes items, in the local engine's process (:mod:`loom.batch_jobs`) and on each Ray worker
(:mod:`loom.batch_ray`). Both engines import this module and neither imports the other's.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from loom.core.data import Data
from loom.core.errors import ConfigError, InputError
from loom.outputs import FORMATS, OutputFormat, format_for


# -- items ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    """One prompt of a job: its id (the output's file name), prompt, seed, per-item step options and the image
    files its chain takes (``{"image": path, "mask": path}``)."""

    id: str
    prompt: str
    seed: int
    params: dict | None = None
    given: dict | None = None

    @property
    def params_key(self) -> str:
        return params_key(self.params)


def params_key(params: Mapping | None) -> str:
    """Items with the same key run on the same chain."""
    return json.dumps(params or {}, sort_keys=True)


def item_spec(base: dict, params: Mapping | None) -> dict:
    """``base`` with an item's ``params`` merged into the options of the steps they name. Params
    are replayed as a record is: they may name no hub id nor ``download: true``
    (:func:`loom.records.options_problem`)."""
    from loom.records import options_problem

    if not params:
        return base
    steps = [dict(s) for s in base["steps"]]
    names = [s["component"] for s in steps]
    for name, options in params.items():
        if name not in names and ":" not in name:  # "resize" reaches a default chain's "image-postprocessors:resize"
            name = next((n for n in names if n.rpartition(":")[2] == name), name)
        if name not in names:
            raise ConfigError(f"params name {name!r}, which is no step of this chain (steps: {', '.join(names)})")
        problem = options_problem(options, f"params for {name!r}")
        if problem:
            raise ConfigError(f"{problem}; params may name only local folders (put hub models in the job's chain)")
        for step in steps:
            if step["component"] == name:
                step["config"] = {**step.get("config", {}), **options}
    return {**base, "steps": steps}


# -- writing outputs -----------------------------------------------------------------------------
def writer_for(output_type: type[Data]) -> OutputFormat:
    """The format a job writes a chain's output type in (a job writes each format's first suffix:
    see :data:`loom.outputs.FORMATS`), or an error saying what a job can write."""
    try:
        return format_for(output_type)
    except InputError:
        kinds = ", ".join(f"{f.data_type.kind} ({f.suffix[1:].upper()})" for f in FORMATS)
        raise InputError(
            f"batch jobs cannot write {output_type.kind} outputs yet (they write {kinds}); "
            f"end the chain in a step that gives {' or '.join(f.data_type.kind for f in FORMATS)}"
        ) from None


def item_record(result, index: int) -> dict:
    """Item ``index``'s provenance record, with nothing that depends on how it ran (batch position,
    batch size, timings, creation time), so its file is the same bytes however it was made."""
    record = result.record(index)
    for key in ("item", "batch_size", "timings", "created"):
        record.pop(key, None)
    return record


def expected_record(pipeline, item: Item) -> dict:
    """What an output's record must hold for it to count as this item's output on resume."""
    from loom.records import RECORD_VERSION

    return {
        "loom_record": RECORD_VERSION,
        "spec": pipeline.spec.model_dump(mode="json"),
        "inputs": [item.prompt],
        "seeds": [item.seed],
    }


# -- running items (the same code on every engine) -------------------------------------------------
def manifest_row(
    item: Item,
    status: str,
    output: str | None = None,
    error: str | None = None,
    timings: dict | None = None,
    worker: str | None = None,
) -> dict:
    """The manifest row of ``item`` (the columns :mod:`loom.batch_jobs` documents), on every engine."""
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


def describe(err: BaseException) -> str:
    """An item's error as the manifest shows it: the exception's type and message."""
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
            from loom.chains import Pipeline

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
        for item in items:  # a group runs as one batch: one chain, the same named inputs
            groups.setdefault(item.params_key + repr(sorted(item.given or {})), []).append(item)
        for group in groups.values():
            try:
                pipeline = self.pipeline(group[0].params)
            except Exception as err:  # params the chain refuses: every item of the group fails alone
                for item in group:
                    rows[item.id] = manifest_row(item, "failed", error=describe(err), worker=self.worker)
                continue
            for row in self._run_group(pipeline, group):
                rows[row["id"]] = row
        return [rows[item.id] for item in items]

    def _run_group(self, pipeline, group: list[Item]) -> list[dict]:
        from loom.outputs import read_images

        start = time.perf_counter()
        try:
            given = read_images({name: [i.given[name] for i in group] for name in group[0].given or {}})
            result = pipeline.run([i.prompt for i in group], [i.seed for i in group], progress=False, **given)
        except Exception as err:
            if len(group) == 1:
                return [manifest_row(group[0], "failed", error=describe(err), worker=self.worker)]
            # Find the bad item(s): alone, each item gives the same output it would have in the batch.
            return [row for item in group for row in self._run_group(pipeline, [item])]
        share = (time.perf_counter() - start) / len(group)
        return [self._write(item, result, i, share) for i, item in enumerate(group)]

    def _write(self, item: Item, result, index: int, run_s: float) -> dict:
        problem = self.writer.problem(result.output, index)
        if problem:
            return manifest_row(item, "failed", error=problem, timings={"run_s": round(run_s, 4)}, worker=self.worker)
        path = self.output_path(item)
        start = time.perf_counter()
        try:
            self.writer.write(result.output, index, path, item_record(result, index))
        except Exception as err:
            return manifest_row(item, "failed", error=f"writing {path.name}: {describe(err)}", worker=self.worker)
        timings = {
            "run_s": round(run_s, 4),
            "write_s": round(time.perf_counter() - start, 4),
            "done_s": round(time.time() - self.started, 3),
        }
        return manifest_row(item, "ok", output=path.name, timings=timings, worker=self.worker)
