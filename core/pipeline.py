"""Pipelines: a chain of components, type-checked when built and run on batches.

A chain is built from a :class:`PipelineSpec` (from Python, YAML or JSON). Building it resolves
every component name, validates every config and checks that each step takes what the step
before it gives, all before any weights load; any mistake raises a :class:`~loom.core.errors.LoomError`
naming the step, what it got and what it accepts.
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .component import Component, describe_validation_error, validate_config
from .data import Data, Image, Text
from .errors import InputError, SpecError, TypeMismatchError, UnknownComponentError
from .plugins import ComponentEntry, Registry, get_registry
from .seeding import item_seeds

#: Version of the provenance record's layout.
RECORD_VERSION = 1


class StepSpec(BaseModel):
    """One step: a registered component name (or ``plugin:name``) and its options."""

    model_config = ConfigDict(extra="forbid")
    component: str
    config: dict[str, Any] = Field(default_factory=dict)


class PipelineSpec(BaseModel):
    """A chain of steps. As YAML::

        steps:
          - component: text-encoder
          - component: vae
            config: {temperature: 0.8}
          - component: resize
            config: {size: 256}
    """

    model_config = ConfigDict(extra="forbid")
    version: Literal[1] = 1
    name: str | None = None
    steps: list[StepSpec] = Field(min_length=1)

    @classmethod
    def load(cls, source: "str | Path | Mapping | PipelineSpec") -> "PipelineSpec":
        """From a spec object, a mapping, a path to a .yaml/.yml/.json file, or YAML/JSON text."""
        if isinstance(source, PipelineSpec):
            return source
        where = "spec"
        if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source and Path(source).suffix.lower() in {".yaml", ".yml", ".json"}):
            path = Path(source)
            where = str(path)
            if not path.is_file():
                raise SpecError(f"spec file {str(path)!r} does not exist")
            source = path.read_text(encoding="utf-8")
        if isinstance(source, str):
            import yaml  # YAML is a superset of JSON, so one parser reads both

            try:
                source = yaml.safe_load(source)
            except yaml.YAMLError as err:
                raise SpecError(f"{where}: not valid YAML or JSON: {err}") from None
        if not isinstance(source, Mapping):
            raise SpecError(f"{where}: a spec is a mapping with a 'steps' list, got {type(source).__name__}")
        try:
            return cls.model_validate(dict(source))
        except ValidationError as err:
            raise SpecError(describe_validation_error(err, where)) from None


@dataclass
class Result:
    """What a run gives: the last step's output batch and the provenance record of the run."""

    output: Data
    provenance: dict

    def __len__(self) -> int:
        return len(self.output)

    @property
    def images(self):
        """The outputs as PIL images (for chains that end in :class:`Image`)."""
        if not isinstance(self.output, Image):
            raise InputError(f"this pipeline gives {self.output.kind}, not images")
        return self.output.to_pil()

    def record(self, index: int) -> dict:
        """The provenance record of item ``index`` alone: enough to regenerate it exactly."""
        rec = dict(self.provenance)
        rec["inputs"] = [self.provenance["inputs"][index]]
        if "input_sha256" in rec:
            rec["input_sha256"] = [rec["input_sha256"][index]]
        rec["seeds"] = [self.provenance["seeds"][index]]
        rec["item"] = index
        rec["batch_size"] = len(self.output)
        return rec


class Pipeline:
    """A type-checked chain of components. Build with :meth:`from_spec` or :meth:`from_steps`."""

    def __init__(self, spec: PipelineSpec, components: list[Component], entries: list[ComponentEntry], registry: Registry):
        self.spec = spec
        self.components = components
        self.entries = entries
        self.registry = registry
        self.load_seconds = 0.0

    # -- building -----------------------------------------------------------------------------
    @classmethod
    def from_spec(cls, spec: "PipelineSpec | Mapping | str | Path", registry: Registry | None = None) -> "Pipeline":
        """Resolve, validate and type-check a spec. Loads no weights."""
        spec = PipelineSpec.load(spec)
        registry = registry or get_registry()
        entries, components = [], []
        for i, step in enumerate(spec.steps, start=1):
            entry = _resolve(registry, step, i)
            where = f"step {i} ({step.component!r})"
            config = validate_config(entry.cls, step.config, where)
            if entries:
                prev, prev_entry = spec.steps[i - 2], entries[-1]
                if not issubclass(prev_entry.cls.output_type, entry.cls.input_type):
                    takers = [e.name for e in registry.components() if issubclass(prev_entry.cls.output_type, e.cls.input_type)]
                    raise TypeMismatchError(
                        f"{where} takes {entry.cls.input_type.kind}, but step {i - 1} ({prev.component!r}) gives "
                        f"{prev_entry.cls.output_type.kind}; components that take {prev_entry.cls.output_type.kind}: "
                        f"{', '.join(takers) or 'none'}"
                    )
            entries.append(entry)
            components.append(entry.cls(config))
        resolved = PipelineSpec(
            name=spec.name,
            steps=[StepSpec(component=s.component, config=c.config.model_dump(mode="json")) for s, c in zip(spec.steps, components)],
        )
        return cls(resolved, components, entries, registry)

    @classmethod
    def from_steps(cls, *steps: "str | tuple[str, Mapping]", name: str | None = None, registry: Registry | None = None) -> "Pipeline":
        """``Pipeline.from_steps("text-encoder", ("vae", {"temperature": 0.8}), "resize")``."""
        spec = []
        for s in steps:
            if isinstance(s, str):
                spec.append({"component": s})
            else:
                component, config = s
                spec.append({"component": component, "config": dict(config)})
        return cls.from_spec({"name": name, "steps": spec}, registry)

    @property
    def input_type(self) -> type[Data]:
        return self.entries[0].cls.input_type

    @property
    def output_type(self) -> type[Data]:
        return self.entries[-1].cls.output_type

    # -- running ------------------------------------------------------------------------------
    def load(self, progress: bool = True) -> "Pipeline":
        """Load every component's weights now (otherwise the first run does)."""
        from tqdm.auto import tqdm

        start = time.perf_counter()
        todo = [(s, c) for s, c in zip(self.spec.steps, self.components) if not c.loaded]
        with tqdm(todo, desc="loading", unit="step", disable=not progress or not todo, delay=1.0, leave=False) as bar:
            for step, component in bar:
                bar.set_postfix_str(step.component)
                component.load()
        self.load_seconds += time.perf_counter() - start
        return self

    def _coerce(self, inputs: Any) -> Data:
        if isinstance(inputs, Data):
            data = inputs
        elif self.input_type is Text and (isinstance(inputs, str) or (isinstance(inputs, Sequence) and all(isinstance(x, str) for x in inputs))):
            data = Text(inputs)
        else:
            raise InputError(f"this pipeline takes {self.input_type.kind} input, got {type(inputs).__name__}")
        if not isinstance(data, self.input_type):
            raise InputError(f"this pipeline takes {self.input_type.kind} input, got {data.kind}")
        if len(data) == 0:
            raise InputError("nothing to run: the input batch is empty")
        if isinstance(data, Text):
            for i, s in enumerate(data.items):
                if not s.strip():
                    raise InputError(f"prompt {i + 1} is empty: give some text to generate from")
        return data

    def run(self, inputs: Any, seed: Any = None, *, progress: bool = True) -> Result:
        """Run the chain on a batch (a prompt, a list of prompts, or a data batch).

        ``seed``: an int (item *i* gets ``seed + i``), one int per item, or None for a random
        seed that is recorded in the result's provenance. The same input and seed give the same
        output alone or in any batch.
        """
        from tqdm.auto import tqdm

        data = given = self._coerce(inputs)
        n = len(data)
        seeds = item_seeds(seed, n)
        self.load(progress=progress)
        self.registry.notify("loom_pipeline_start", pipeline=self, inputs=data, seeds=seeds)
        timings = []
        total = n * len(self.components)
        with tqdm(total=total, desc="generating", unit="item", disable=not progress, delay=1.0, leave=False) as bar:
            for index, (step, component) in enumerate(zip(self.spec.steps, self.components)):
                start = time.perf_counter()
                done = 0.0

                def advance(finished: float, _base=index * n) -> None:
                    nonlocal done
                    if finished > done:  # whole items and finer work both move the bar, never back
                        done = finished
                        # set, not added: fractions of an item summed drift (a bar at 3.000000000000001/3)
                        bar.n = round(_base + finished, 6)
                        bar.update(0)

                def work(units: int, total: int, unit: str, _step=step, _index=index) -> None:
                    advance(n * units / max(total, 1))
                    bar.set_postfix_str(f"{_step.component}: {unit} {units}/{total}", refresh=False)
                    self.registry.notify(
                        "loom_step_progress", pipeline=self, step=_step, index=_index, done=units, total=total, unit=unit
                    )

                bar.set_postfix_str(step.component)
                data = component(data, seeds, progress=advance, work=work)
                seconds = time.perf_counter() - start
                timings.append(round(seconds, 4))
                self.registry.notify("loom_step_end", pipeline=self, step=step, index=index, output=data, seconds=seconds)
        result = Result(output=data, provenance=self._record(given, seeds, timings))
        self.registry.notify("loom_pipeline_end", pipeline=self, result=result)
        return result

    def _record(self, data: Data, seeds: list[int], timings: list[float]) -> dict:
        from importlib.metadata import PackageNotFoundError, version

        try:
            loom_version = version("loom")
        except PackageNotFoundError:  # running from a source tree
            loom_version = "unknown"
        return {
            "loom_record": RECORD_VERSION,
            "loom_version": loom_version,
            "spec": self.spec.model_dump(mode="json"),
            "components": [
                {
                    "step": i + 1,
                    "component": e.name,
                    "plugin": e.plugin,
                    "plugin_version": e.plugin_version,
                    "class": f"{e.cls.__module__}.{e.cls.__qualname__}",
                }
                for i, e in enumerate(self.entries)
            ],
            "inputs": list(data.items) if isinstance(data, Text) else [None] * len(data),
            # a non-text input is not kept (audio is large); its digest lets `loom reproduce
            # --input FILE` check that the input given again is the same
            **({} if isinstance(data, Text) else {
                "input_kind": data.kind, "input_sha256": [data.digest(i) for i in range(len(data))],
            }),
            "seeds": seeds,
            "timings": {"load_s": round(self.load_seconds, 4), "steps_s": timings, "run_s": round(sum(timings), 4)},
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }

    def __repr__(self) -> str:
        chain = " → ".join(f"{s.component}" for s in self.spec.steps)
        return f"Pipeline({chain}: {self.input_type.kind} → {self.output_type.kind})"


def _resolve(registry: Registry, step: StepSpec, i: int) -> ComponentEntry:
    try:
        return registry.get(step.component)
    except UnknownComponentError as err:
        raise UnknownComponentError(f"step {i}: {err}") from None

