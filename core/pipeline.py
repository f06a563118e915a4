"""Pipelines: a chain of components, type-checked when built and run on batches.

A chain is built from a :class:`PipelineSpec` (``loom.Pipeline`` reads YAML and JSON). Building it resolves every
component name, validates every config and checks that each step takes what the step before it gives, all before any
weights load; any mistake raises a :class:`~loom.core.errors.LoomError` naming the step, what it got, what it accepts.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Literal, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .component import Component, describe_validation_error, validate_config
from .data import Data, Image, Text
from .errors import Cancelled, InputError, SpecError, TypeMismatchError, UnknownComponentError
from .plugins import ComponentEntry, Registry, get_registry
from .seeding import item_seeds

Report = Callable[[float, float, str], None]  # told (done, total, note) as work finishes
Preview = Callable[[Data, list[int]], None]  # told (a step's output so far, the batch's items it holds)


class StepSpec(BaseModel):
    """One step: a registered component name (or ``plugin:name``) and its options."""

    model_config = ConfigDict(extra="forbid")
    component: str
    config: dict[str, Any] = Field(default_factory=dict)


class PipelineSpec(BaseModel):
    """A chain of steps: ``{"steps": [{"component": "text-encoder"}, {"component": "vae", "config": {...}}]}``."""

    model_config = ConfigDict(extra="forbid")
    version: Literal[1] = 1
    name: str | None = None
    steps: list[StepSpec] = Field(min_length=1)

    @classmethod
    def load(cls, source: "Mapping[str, Any] | PipelineSpec", where: str = "spec") -> "PipelineSpec":
        """A spec from a spec object or a mapping (``loom.Pipeline`` also reads YAML and JSON)."""
        if isinstance(source, PipelineSpec):
            return source
        if not isinstance(source, Mapping):
            raise SpecError(f"{where}: a spec is a mapping with a 'steps' list, got {type(source).__name__}")
        try:
            return cls.model_validate(dict(source))
        except ValidationError as err:
            raise SpecError(describe_validation_error(err, where)) from None


class CancelToken:
    """Asks a running :meth:`Pipeline.run` to stop: it raises :class:`Cancelled` at the next item, or
    at the next unit of work a component reports (a denoising step). Thread-safe: a request handler
    cancels while another thread runs."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self, where: str) -> None:
        """Raise :class:`Cancelled` (saying ``where``) if cancelled."""
        if self._event.is_set():
            raise Cancelled(f"cancelled {where}")


@dataclass
class Result:
    """What a run gives: the last step's output batch and what the run recorded (:meth:`Pipeline.provenance`)."""

    output: Data
    provenance: dict[str, Any]

    def __len__(self) -> int:
        return len(self.output)

    @property
    def images(self) -> list[Any]:
        """The outputs as PIL images (for chains that end in :class:`Image`)."""
        if not isinstance(self.output, Image):
            raise InputError(f"this pipeline gives {self.output.kind}, not images")
        return self.output.to_pil()

    #: The provenance entries that hold one value per item.
    PER_ITEM: ClassVar[tuple[str, ...]] = ("inputs", "input_sha256", "seeds", "heard", "given")

    def record(self, index: int) -> dict[str, Any]:
        """The provenance record of item ``index`` alone: enough to regenerate it exactly."""
        rec = {k: [v[index]] if k in self.PER_ITEM else v for k, v in self.provenance.items()}
        return {**rec, "item": index, "batch_size": len(self.output)}


class Pipeline:
    """A type-checked chain of components, built with :meth:`from_spec` (``loom.Pipeline`` adds files and bars)."""

    def __init__(
        self, spec: PipelineSpec, components: list[Component], entries: list[ComponentEntry], registry: Registry
    ):
        self.spec, self.components, self.entries, self.registry = spec, components, entries, registry
        self.load_seconds = 0.0

    # -- building -----------------------------------------------------------------------------
    @classmethod
    def from_spec(cls, spec: "PipelineSpec | Mapping[str, Any]", registry: Registry | None = None) -> "Pipeline":
        """Resolve, validate and type-check a spec. Loads no weights."""
        spec = PipelineSpec.load(spec)
        registry = registry or get_registry()
        entries, components = list[ComponentEntry](), list[Component]()
        for i, step in enumerate(spec.steps, start=1):
            entry = _resolve(registry, step, i)
            config = validate_config(entry.cls, step.config, f"step {i} ({step.component!r})")
            if entries:
                _check_fits(registry, spec, entries[-1], entry, i)
            entries.append(entry)
            components.append(entry.cls(config))
        steps = [
            StepSpec(component=s.component, config=c.config.model_dump(mode="json"))
            for s, c in zip(spec.steps, components)
        ]
        return cls(PipelineSpec(name=spec.name, steps=steps), components, entries, registry)

    @property
    def input_type(self) -> type[Data]:
        return self.entries[0].cls.input_type

    @property
    def output_type(self) -> type[Data]:
        return self.entries[-1].cls.output_type

    @property
    def takes(self) -> dict[str, tuple[type[Data], bool]]:
        """The named inputs a request may give this chain: name → (type, required by some step)."""
        found: dict[str, tuple[type[Data], bool]] = {}
        for entry in self.entries:
            for key, kind in entry.cls.takes.items():
                before = found.get(key, (kind, False))
                found[key] = (before[0], before[1] or key not in entry.cls.optional)
        return found

    def check_given(self, given: Mapping[str, Any], n: int) -> dict[str, Data]:
        """``given`` (name → Data of ``n`` items, or of 1 for all) as the steps take it, each of ``n`` items; an
        InputError naming the step and input when one is missing or mistyped, or an input no step takes. No loading."""
        given = {key: value for key, value in given.items() if value is not None}
        steps = list(zip(self.spec.steps, self.entries))
        for i, (step, entry) in enumerate(steps, start=1):
            for key, kind in entry.cls.takes.items():
                where, value = f"step {i} ({step.component!r}) takes {key} ({kind.kind})", given.get(key)
                if value is None and key not in entry.cls.optional:
                    raise InputError(f"{where}, which this request does not give: pass {key}=…")
                if value is not None and not isinstance(value, kind):
                    raise InputError(f"{where}, but this request gives {key} as {type(value).__name__}")
        for key, value in given.items():
            if key not in self.takes:
                said = ", ".join(repr(s.component) + "".join(f" +{t}" for t in e.cls.takes) for s, e in steps)
                raise InputError(f"no step of this chain takes {key!r}; its steps (+ the inputs they take): {said}")
            if len(value) not in (1, n):
                raise InputError(f"{key} holds {len(value)} items for {n} inputs: give one per input, or one for all")
        return {key: value.take([0] * n) if len(value) != n else value for key, value in given.items()}

    # -- running ------------------------------------------------------------------------------
    def load(self, progress: Report | None = None) -> "Pipeline":
        """Load every component's weights now (else the first run does), telling ``progress(loaded, total, step)``."""
        start = time.perf_counter()
        todo = [(s, c) for s, c in zip(self.spec.steps, self.components) if not c.loaded]
        for done, (step, component) in enumerate(todo):
            if progress:
                progress(done, len(todo), step.component)
            component.load()
        self.load_seconds += time.perf_counter() - start
        return self

    def _coerce(self, inputs: Any) -> Data:
        prompts = [inputs] if isinstance(inputs, str) else inputs
        if isinstance(inputs, Data):
            data = inputs
        elif self.input_type is Text and isinstance(prompts, Sequence) and all(isinstance(x, str) for x in prompts):
            data = Text(list(prompts))
        else:
            raise InputError(f"this pipeline takes {self.input_type.kind} input, got {type(inputs).__name__}")
        if not isinstance(data, self.input_type):
            raise InputError(f"this pipeline takes {self.input_type.kind} input, got {data.kind}")
        if len(data) == 0:
            raise InputError("nothing to run: the input batch is empty")
        for i, s in enumerate(data.items if isinstance(data, Text) else []):
            if not s.strip():
                raise InputError(f"prompt {i + 1} is empty: give some text to generate from")
        return data

    async def arun(self, inputs: Any, seed: Any = None, **options: Any) -> Result:
        """:meth:`run` in a worker thread, for asyncio code; cancelling the awaiting task cancels the run (at its
        next item or reported step; the thread then ends with :class:`Cancelled`)."""
        token = options.setdefault("cancel", CancelToken())
        try:
            return await asyncio.to_thread(self.run, inputs, seed, **options)
        except asyncio.CancelledError:
            token.cancel()
            raise

    def run(
        self,
        inputs: Any,
        seed: Any = None,
        *,
        progress: Any = None,
        loading: Any = None,
        cancel: CancelToken | None = None,
        preview: "Preview | None" = None,
        preview_every: float = 1.0,
        **given: Any,
    ) -> Result:
        """Run the chain on a batch (a prompt, a list of prompts, or a data batch) with the named inputs its steps take
        (``image=Image(...)``: one item per input, or one for all; checked by :meth:`check_given` before loading).
        ``seed``: an int (item *i* gets ``seed + i``), one int per item, or None for a random seed, recorded. The same
        input and seed give the same output alone or in any batch. ``progress(done, total, note)``, if callable, is
        told as work finishes (``done`` of items × steps, in fractions where a component reports finer work);
        ``loading`` is passed to :meth:`load`. ``cancel``: a :class:`CancelToken`; once cancelled, the run raises
        :class:`Cancelled` at the next item or reported unit of work, returning nothing. ``preview(data, items)``, if
        callable, is told at most every ``preview_every`` seconds while a step reports a preview: ``data`` is that
        step's output so far for the batch's ``items`` (the image a denoiser would give now); making it costs the
        run time, so previews come only when asked for."""
        data = first = self._coerce(inputs)
        named = self.check_given(given, len(data))
        seeds = item_seeds(seed, len(data))
        self.load(loading)
        self.registry.notify("loom_pipeline_start", pipeline=self, inputs=data, seeds=seeds)
        timings = []
        told = progress if callable(progress) else lambda *_: None

        def report(done: float, total: float, note: str) -> None:
            told(done, total, note)
            if cancel is not None:
                cancel.check(f"at {note} ({done:g} of {total:g})")

        for index, step in enumerate(self.spec.steps):
            start = time.perf_counter()
            data = self._run_step(index, data, seeds, report, named, _throttled(preview, preview_every))
            seconds = time.perf_counter() - start
            timings.append(round(seconds, 4))
            self.registry.notify("loom_step_end", pipeline=self, step=step, index=index, output=data, seconds=seconds)
        result = Result(output=data, provenance=self.provenance(first, seeds, timings, given=named))
        self.registry.notify("loom_pipeline_end", pipeline=self, result=result)
        return result

    def _run_step(
        self, index: int, data: Data, seeds: list[int], report: Report, given: Any = None, preview: Any = None
    ) -> Data:
        """Step ``index`` on ``data`` (and the ``given`` inputs it takes), telling ``report`` and loom_step_progress."""
        step, n = self.spec.steps[index], len(data)
        base, total = index * n, n * len(self.components)

        def work(done: int, of: int, unit: str) -> None:
            report(base + n * done / max(of, 1), total, f"{step.component}: {unit} {done}/{of}")
            self.registry.notify(
                "loom_step_progress", pipeline=self, step=step, index=index, done=done, total=of, unit=unit
            )

        def items(done: int) -> None:
            report(base + done, total, step.component)

        items(0)
        takes = self.entries[index].cls.takes
        return self.components[index](
            data,
            seeds,
            progress=items,
            work=work,
            preview=preview,
            **{k: v for k, v in (given or {}).items() if k in takes},
        )

    def provenance(self, inputs: Data, seeds: list[int], timings: list[float], given: Any = None) -> dict[str, Any]:
        """What a run records in its :class:`Result`: the inputs (text; None for other kinds), seeds and timings
        (``given``, the named inputs, is for an app's record: ``loom.Pipeline`` keeps their digests)."""
        return {
            "inputs": list(inputs.items) if isinstance(inputs, Text) else [None] * len(inputs),
            "seeds": seeds,
            "timings": {"load_s": round(self.load_seconds, 4), "steps_s": timings, "run_s": round(sum(timings), 4)},
        }

    def __repr__(self) -> str:
        chain = " → ".join(f"{s.component}" for s in self.spec.steps)
        return f"Pipeline({chain}: {self.input_type.kind} → {self.output_type.kind})"


def _throttled(preview: "Preview | None", every: float) -> "Callable[[Callable[[], Data], list[int]], None] | None":
    """What a component is told previews through: ``preview`` given the made data at most every ``every`` seconds."""
    if preview is None:
        return None
    last = [-math.inf]

    def told(make: Callable[[], Data], items: list[int]) -> None:
        if time.monotonic() - last[0] >= every:
            last[0] = time.monotonic()
            preview(make(), items)

    return told


def _resolve(registry: Registry, step: StepSpec, i: int) -> ComponentEntry:
    try:
        return registry.get(step.component)
    except UnknownComponentError as err:
        raise UnknownComponentError(f"step {i}: {err}") from None


def _check_fits(registry: Registry, spec: PipelineSpec, before: ComponentEntry, after: ComponentEntry, i: int) -> None:
    """A TypeMismatchError unless step ``i`` takes what step ``i - 1`` gives."""
    steps, gives, takes = spec.steps, before.cls.output_type, after.cls.input_type
    if issubclass(gives, takes):
        return
    takers = ", ".join(e.name for e in registry.components() if issubclass(gives, e.cls.input_type)) or "none"
    raise TypeMismatchError(
        f"step {i} ({steps[i - 1].component!r}) takes {takes.kind}, but step {i - 1} ({steps[i - 2].component!r}) "
        f"gives {gives.kind}; components that take {gives.kind}: {takers}"
    )
