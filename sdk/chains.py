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

import functools
from pathlib import Path
from typing import Any, Callable, Mapping

from loom.core import Audio, Data, Embedding, InputError, LoomError, PipelineSpec, Registry, Result, SpecError
from loom.core import Pipeline as Engine
from loom.limits import Limits, current, pixels_of
from loom.records import run_record

#: The file suffixes a spec file may have (YAML is a superset of JSON, so one parser reads both).
SPEC_SUFFIXES = (".yaml", ".yml", ".json")


def is_spec_file(source: Any) -> bool:
    """Whether ``source`` names a spec file (by its suffix) rather than holding a spec."""
    return isinstance(source, (str, Path)) and "\n" not in str(source) and Path(source).suffix.lower() in SPEC_SUFFIXES


def read_spec(source: "str | Path | Mapping | PipelineSpec") -> PipelineSpec:
    """A spec from a spec object, a mapping, a path to a .yaml/.yml/.json file, or YAML/JSON text.

    A spec over :mod:`loom.limits` is refused with one line before pydantic or any component sees
    it: its bytes, its nesting, its values counted with YAML aliases expanded, and the pixels of
    any step option named ``size`` (by convention an image's longer side, or its [height, width])."""
    if isinstance(source, PipelineSpec):
        where, spec = "spec", source
    else:
        if isinstance(source, (str, Path)):
            where, parsed = _parse(source)
        else:
            where, parsed = "spec", source
            _measure(parsed, where, _value_children)
        try:
            spec = PipelineSpec.load(parsed, where)
        except LoomError as err:
            raise _shortened(err) from None
    _check_pixels(spec, where)
    return spec


def _parse(source: "str | Path") -> tuple[str, Any]:
    """Where a spec's text comes from (its file, or "spec") and its parsed value, each refused
    over the limits before the next step reads it."""
    import yaml

    limits, where = current(), "spec"
    if isinstance(source, Path) or is_spec_file(source):
        path, where = Path(source), str(source)
        if not path.is_file():
            raise SpecError(f"spec file {where!r} does not exist")
        limits.check("spec_bytes", path.stat().st_size, f"spec file {where!r}")
        try:
            source = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise SpecError(f"spec file {where!r} is not UTF-8 text: {err.reason} at byte {err.start}") from None
    else:
        limits.check("spec_bytes", len(source.encode("utf-8")), "spec text")
    try:
        loader = _spec_loader()(source)  # PyYAML's reader refuses control characters here
    except yaml.YAMLError as err:
        raise SpecError(f"{where}: not valid YAML or JSON: {err}") from None
    loader.where, loader.limits = where, limits
    try:
        node = loader.get_single_node()
        if node is None:
            return where, None
        _measure(node, where, _node_children)
        return where, loader.construct_document(node)
    except yaml.YAMLError as err:
        raise SpecError(f"{where}: not valid YAML or JSON: {err}") from None
    finally:
        loader.dispose()


@functools.cache
def _spec_loader() -> type:
    """PyYAML's SafeLoader, refusing a spec nested deeper than the limit while composing it: its
    composer recurses once per level, and a deep enough spec would end in a RecursionError."""
    import yaml

    class SpecLoader(yaml.SafeLoader):
        where, limits, depth = "spec", Limits(), 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.ScalarEvent, yaml.AliasEvent):
                return super().compose_node(parent, index)
            self.depth += 1
            try:
                if self.depth > self.limits.spec_depth:
                    self.limits.refuse("spec_depth", f"{_label(self.where)} is nested deeper")
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    return SpecLoader


def _node_children(node: Any) -> "list | None":
    """A YAML node's children (keys and values of a mapping); None for a scalar."""
    import yaml

    if isinstance(node, yaml.MappingNode):
        return [x for pair in node.value for x in pair]
    return node.value if isinstance(node, yaml.SequenceNode) else None


def _value_children(value: Any) -> "list | None":
    """A Python value's children (keys and values of a mapping); None for a scalar."""
    if isinstance(value, Mapping):
        return [x for pair in value.items() for x in pair]
    return list(value) if isinstance(value, (list, tuple)) else None


def _measure(root: Any, where: str, children: Callable[[Any], "list | None"]) -> None:
    """Refuse ``root`` when it nests deeper than ``spec_depth`` or holds more than ``spec_nodes``
    values with its aliases expanded. A shared value (a YAML alias) is measured once and counted at
    each use, so an alias bomb costs its own size in bytes here, not its expansion."""
    limits, label = current(), _label(where)
    measured: dict[int, tuple[int, int]] = {}  # id → (values, levels of nesting)
    open_: set[int] = set()

    def visit(value: Any, level: int) -> tuple[int, int]:
        kids = children(value)
        if kids is None:
            return 1, 0
        key = id(value)
        if key not in measured:
            if key in open_:
                raise SpecError(f"{label} holds itself (a YAML alias inside its own anchor); write it out instead")
            if level > limits.spec_depth:
                limits.refuse("spec_depth", f"{label} is nested deeper")
            open_.add(key)
            parts = [visit(kid, level + 1) for kid in kids]
            open_.discard(key)
            measured[key] = (1 + sum(v for v, _ in parts), 1 + max((h for _, h in parts), default=0))
        values, levels = measured[key]
        if level - 1 + levels > limits.spec_depth:
            limits.refuse("spec_depth", f"{label} is nested deeper")
        return values, levels

    limits.check("spec_nodes", visit(root, 1)[0], f"the number of values in {label}")


def _check_pixels(spec: PipelineSpec, where: str) -> None:
    """Refuse a step whose option ``size`` asks for an image over the ``pixels`` limit."""
    limits = current()
    for i, step in enumerate(spec.steps, start=1):
        size = step.config.get("size")
        pixels = pixels_of(size)
        if pixels is not None and pixels > limits.pixels:
            limits.refuse("pixels", f"{_label(where)}: step {i} ({step.component!r}) size {size} is {pixels:,} pixels")


def _label(where: str) -> str:
    return where if where == "spec" else f"spec {where!r}"


#: Longest line of an error message: pydantic quotes the value it refused, which may be huge.
MESSAGE_LINE = 400


def _shortened(err: LoomError) -> LoomError:
    """``err``, or the same error with each over-long line cut in the middle."""
    lines = str(err).split("\n")
    if all(len(line) <= MESSAGE_LINE for line in lines):
        return err
    half = MESSAGE_LINE // 2
    cut = [
        f"{x[:half]} …({len(x) - 2 * half:,} characters)… {x[-half:]}" if len(x) > MESSAGE_LINE else x for x in lines
    ]
    return type(err)("\n".join(cut))


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
        try:
            return super().from_spec(read_spec(spec), registry)
        except LoomError as err:
            raise _shortened(err) from None

    def provenance(self, inputs: Data, seeds: list[int], timings: list[float], given: Any = None) -> dict:
        """The replayable provenance record of a run (:mod:`loom.records`), with the digests of the ``given`` inputs
        (image, mask); for a chain on Audio, also ``heard``: what a spoken-prompt encoder heard in each item."""
        record = run_record(self, inputs, super().provenance(inputs, seeds, timings), given)
        heard = getattr(self, "_heard", None)
        return record if heard is None else {**record, "heard": heard}

    def _run_step(
        self,
        index: int,
        data: Data,
        seeds: list[int],
        report: Callable[[float, float, str], None],
        given: Any = None,
        preview: Any = None,
    ) -> Data:
        """The engine's step, noting the words the first Embedding of a chain on Audio holds (what
        was heard), and naming the input item a step refused when it works on one item at a time."""
        if index == 0:
            self._heard: "list[str] | None" = None
        finished = [0.0]

        def counted(done: float, total: float, note: str) -> None:
            finished[0] = done - index * len(data)
            report(done, total, note)

        try:
            out = super()._run_step(index, data, seeds, counted, given, preview)
        except InputError as err:
            if len(data) == 1 or self.components[index].micro_batch != 1:
                raise
            raise type(err)(f"input {int(finished[0]) + 1} of {len(data)}: {err}") from None
        if self._heard is None and issubclass(self.input_type, Audio) and isinstance(out, Embedding):
            self._heard = None if out.text is None else list(out.text)
        return out

    def load(self, progress: "bool | Callable[[float, float, str], None]" = True) -> "Pipeline":
        """Load every component's weights now (otherwise the first run does)."""
        if callable(progress):
            return super().load(progress)
        with Bar("loading", "step", bool(progress)) as bar:
            return super().load(bar)

    def run(
        self,
        inputs: Any,
        seed: Any = None,
        *,
        progress: "bool | Callable[[float, float, str], None]" = True,
        cancel: Any = None,
        preview: Any = None,
        preview_every: float = 1.0,
        **given: Any,
    ) -> Result:
        """Run the chain on a batch (see :meth:`loom.core.Pipeline.run`); ``progress``: show
        bars (the default), not (False), or a callable told ``(done, total, note)``. ``given``: the
        named inputs its steps take (``image=``, ``mask=``: image files, PIL images or Image batches;
        :func:`loom.outputs.read_images`). ``cancel``: a :class:`loom.core.CancelToken`;
        ``preview(data, items)`` every ``preview_every`` seconds: see the core method."""
        from loom.outputs import read_images

        given = read_images(given)
        options = {"cancel": cancel, "preview": preview, "preview_every": preview_every}
        if callable(progress):
            return super().run(inputs, seed, progress=progress, **options, **given)
        with Bar("loading", "step", bool(progress)) as loading, Bar("generating", "item", bool(progress)) as bar:
            return super().run(inputs, seed, progress=bar, loading=loading, **options, **given)
