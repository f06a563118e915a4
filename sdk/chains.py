"""Chains as an app uses them: the engine's :class:`loom.core.Pipeline`, plus specs read from
YAML or JSON (a file or text) or listed as steps, progress bars on the terminal while weights
load and items generate, and the replayable provenance record of every run (:mod:`loom.records`). A spec in YAML::

    steps:
      - component: text-encoder
      - component: vae
        config: {temperature: 0.8}
      - component: resize
        config: {size: 256} ``loom.Pipeline`` is this class; plugins and the engine never need it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from loom.core import Data, PipelineSpec, Registry, Result, SpecError
from loom.core import Pipeline as Engine
from loom.records import run_record

#: The file suffixes a spec file may have (YAML is a superset of JSON, so one parser reads both).
SPEC_SUFFIXES = (".yaml", ".yml", ".json")


def is_spec_file(source: Any) -> bool:
    """Whether ``source`` names a spec file (by its suffix) rather than holding a spec."""
    return isinstance(source, (str, Path)) and "\n" not in str(source) and Path(source).suffix.lower() in SPEC_SUFFIXES


def read_spec(source: "str | Path | Mapping | PipelineSpec") -> PipelineSpec:
    """A spec from a spec object, a mapping, a path to a .yaml/.yml/.json file, or YAML/JSON text."""
    if not isinstance(source, (str, Path)):
        return PipelineSpec.load(source)
    where = "spec"
    if isinstance(source, Path) or is_spec_file(source):
        path, where = Path(source), str(source)
        if not path.is_file():
            raise SpecError(f"spec file {where!r} does not exist")
        source = path.read_text(encoding="utf-8")
    import yaml

    try:
        parsed = yaml.safe_load(source)
    except yaml.YAMLError as err:
        raise SpecError(f"{where}: not valid YAML or JSON: {err}") from None
    return PipelineSpec.load(parsed, where)


class Bar:
    """A terminal progress bar fed ``(done, total, note)`` as the engine reports; it appears
    after a second of work, never moves back, and goes when closed."""

    def __init__(self, desc: str, unit: str, enabled: bool = True) -> None:
        self.desc, self.unit, self.enabled = desc, unit, enabled
        self.bar = None

    def __call__(self, done: float, total: float, note: str) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=self.desc, unit=self.unit, delay=1.0, leave=False)
        self.bar.set_postfix_str(note, refresh=False)
        if done > self.bar.n:
            # set, not added: fractions of an item summed drift (a bar at 3.000000000000001/3)
            self.bar.n = round(done, 6)
            self.bar.update(0)

    def __enter__(self) -> "Bar":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.close()


class Pipeline(Engine):
    """A type-checked chain of components (see :class:`loom.core.Pipeline`) that also reads its
    spec from a YAML or JSON file or text, shows progress bars unless ``progress=False``, and
    records each run's replayable provenance."""

    @classmethod
    def from_steps(
        cls, *steps: "str | tuple[str, Mapping]", name: str | None = None, registry: Registry | None = None
    ) -> "Pipeline":
        """``Pipeline.from_steps("text-encoder", ("vae", {"temperature": 0.8}), "resize")``."""
        spec = [{"component": s} if isinstance(s, str) else {"component": s[0], "config": dict(s[1])} for s in steps]
        return cls.from_spec({"name": name, "steps": spec}, registry)

    @classmethod
    def from_spec(cls, spec: "PipelineSpec | Mapping | str | Path", registry: Registry | None = None) -> "Pipeline":
        """Resolve, validate and type-check a spec (an object, a mapping, a file or YAML/JSON
        text). Loads no weights."""
        return super().from_spec(read_spec(spec), registry)

    def provenance(self, inputs: Data, seeds: list[int], timings: list[float]) -> dict:
        """The replayable provenance record of a run (:mod:`loom.records`)."""
        return run_record(self, inputs, super().provenance(inputs, seeds, timings))

    def load(self, progress: "bool | Callable[[float, float, str], None]" = True) -> "Pipeline":
        """Load every component's weights now (otherwise the first run does)."""
        if callable(progress):
            return super().load(progress)
        with Bar("loading", "step", bool(progress)) as bar:
            return super().load(bar)

    def run(
        self, inputs: Any, seed: Any = None, *, progress: "bool | Callable[[float, float, str], None]" = True
    ) -> Result:
        """Run the chain on a batch (see :meth:`loom.core.Pipeline.run`); ``progress``: show
        bars (the default), not (False), or a callable told ``(done, total, note)``."""
        if callable(progress):
            return super().run(inputs, seed, progress=progress)
        with Bar("loading", "step", bool(progress)) as loading, Bar("generating", "item", bool(progress)) as bar:
            return super().run(inputs, seed, progress=bar, loading=loading)
