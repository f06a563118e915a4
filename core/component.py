"""The three component interfaces: :class:`Encoder`, :class:`Generator`, :class:`Postprocessor`. A component is a
class with

- ``Config``: a pydantic model of its settings (validated when the component is built: a bad value fails before any
  weights load);
- ``input_type`` / ``output_type``: the :mod:`loom.core.data` types it takes and gives, checked when a chain is built;
- ``setup()``: loads weights and heavy libraries, on the first call (or ``load()``), never at construction or import,
  so listing plugins and type-checking chains stay fast;
- ``run(inputs, generators)``: turns one batch into another of the same length. ``generators`` holds one seeded
  ``torch.Generator`` per item: draw each item's randomness from its own, so its output does not depend on its
  neighbours;
- ``takes`` (plugin API 1.5): named request inputs besides the main one, e.g. ``{"image": Image, "mask": Image}``,
  each a batch aligned item for item with ``inputs``, given to ``run`` as keywords (see :attr:`Component.takes`).

A component also declares its :class:`Capabilities`, from which the conformance kit (:mod:`loom.testing`) derives which
checks apply. Call it as ``component(inputs, seed=...)``: the base class loads it, makes the per-item generators, and
runs it on chunks of exactly ``micro_batch`` items (padding the last chunk and dropping the padding after):
floating-point results can change with a batch's shape, and a fixed shape makes an item's output byte-identical alone
or in any batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticSerializationError, to_json

from .data import Data
from .errors import ConfigError, InputError, LoomError
from .seeding import generators as make_generators
from .seeding import item_seeds


class ComponentConfig(BaseModel):
    """Base of every component's config: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Capabilities(BaseModel):
    """What a component promises about itself: ``loom.testing`` checks each promise and skips, with the reason, the
    checks a component opted out of. The defaults are the strict ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The same inputs and seeds give the same outputs.
    deterministic: bool = True
    #: Other seeds give other outputs (False: it ignores its seeds, as most encoders and postprocessors do).
    uses_seed: bool = True
    #: An item's output is the same alone and at any position in a batch.
    batchable: bool = True
    #: Devices the component runs on (``"cpu"``, ``"cuda"``, ...).
    devices: tuple[str, ...] = ("cpu",)
    #: ``setup()`` reads weights (from a file, a package or a hub).
    has_weights: bool = False
    #: The config option naming a weights folder that ``save_weights(folder)`` writes (None: no format).
    weights_option: str | None = None
    #: What the component works on, e.g. ``("text", "image")``; empty: read from its data types.
    modalities: tuple[str, ...] = ()
    #: Largest difference tolerated where the contract says "the same output" (0: identical).
    tolerance: float = Field(default=0.0, ge=0.0)


def describe_validation_error(err: ValidationError, where: str) -> str:
    """One readable line per invalid field: where it is, what was given, what is accepted."""
    wording = {"extra_forbidden": "unknown option {loc!r} (given {given!r})", "missing": "option {loc!r} is required"}
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(config)"
        text = wording.get(e["type"], "option {loc!r} = {given!r} is invalid: {msg}")
        lines.append(f"{where}: " + text.format(loc=loc, given=e.get("input"), msg=e["msg"]))
    return "\n".join(lines)


def validate_config(cls: type["Component"], config: Any, where: str) -> ComponentConfig:
    """``config`` (a mapping, a Config instance or None) as ``cls.Config``, or a ConfigError. Values mean what
    they mean in JSON (a spec, a record): an int is a float, a list a tuple, but ``true`` or "512" is no number."""
    if isinstance(config, cls.Config):
        return config
    config = config.model_dump() if isinstance(config, BaseModel) else {} if config is None else config
    if not isinstance(config, Mapping):
        raise ConfigError(f"{where}: config must be a mapping of options, got {type(config).__name__}")
    try:
        return cls.Config.model_validate_json(to_json(dict(config)), strict=True)
    except PydanticSerializationError as err:
        raise ConfigError(f"{where}: options are YAML/JSON values (numbers, text, lists, mappings): {err}") from None
    except ValidationError as err:
        fields = ", ".join(cls.Config.model_fields) or "none"
        raise ConfigError(f"{describe_validation_error(err, where)}\n(accepted options: {fields})") from None


class Component:
    """Base of every component. Subclass :class:`Encoder`, :class:`Generator` or :class:`Postprocessor`."""

    #: "encoder", "generator" or "postprocessor".
    role: ClassVar[str] = "component"
    Config: ClassVar[type[ComponentConfig]] = ComponentConfig
    input_type: ClassVar[type[Data]] = Data
    output_type: ClassVar[type[Data]] = Data
    #: Items per ``run`` call; None: the whole batch at once (only where an item's output cannot depend on its batch).
    micro_batch: ClassVar[int | None] = 8
    #: One line shown by ``loom plugins``.
    description: ClassVar[str] = ""
    #: What the component promises (see :class:`Capabilities`); the defaults promise the most.
    capabilities: ClassVar[Capabilities] = Capabilities()
    #: Named inputs it takes besides its main input (API 1.5), e.g. ``{"image": Image, "mask": Image}``: ``run``
    #: gets exactly those a request gives, as keyword arguments, each of ``len(inputs)`` items (masks: white = repaint).
    takes: ClassVar[Mapping[str, type[Data]]] = {}
    #: Names in ``takes`` a request may leave out; the others are required (the engine checks before loading).
    optional: ClassVar[frozenset[str]] = frozenset()
    # set by __call__ while a caller listens for work (and previews) reported through report_progress()
    _work_listener: "Callable[[int, int, str, Callable[[], Data] | None], None] | None" = None

    def __init__(self, config: Any = None, **options: Any) -> None:
        if options:
            base = config.model_dump() if isinstance(config, BaseModel) else dict(config or {})
            config = {**base, **options}
        self.config = validate_config(type(self), config, type(self).__name__)
        self._loaded = False

    # -- to implement -------------------------------------------------------------------------
    def setup(self) -> None:
        """Load weights and heavy libraries. Called once, before the first ``run``."""

    def run(self, inputs: Data, generators: list[Any], **given: Data) -> Data:
        """Turn a batch of ``input_type`` into one of ``output_type``, of the same length (``given``: see ``takes``)."""
        raise NotImplementedError

    def save_weights(self, folder: "str | Path") -> Path:
        """Write the loaded weights into ``folder`` as option ``capabilities.weights_option`` (if any) reads them."""
        raise NotImplementedError(f"{type(self).__name__} has no weights folder format")

    # -- provided -----------------------------------------------------------------------------
    def report_progress(
        self, done: int, total: int, unit: str = "step", preview: "Callable[[], Data] | None" = None
    ) -> None:
        """Report progress *inside* ``run``, in the component's own units: ``done`` of ``total`` (e.g. denoising steps)
        for the batch ``run`` was given; Loom makes it progress over the whole batch (bars, loom_step_progress).
        ``preview`` (API 1.7), optional: makes the batch as it stands, as ``output_type`` (the image a denoiser would
        give if it stopped now). Loom calls it only when a caller asked for previews, at the caller's rate, so it may
        cost a decode; it must not change what ``run`` goes on to make."""
        listener = self._work_listener
        if listener is not None:
            listener(done, total, unit, preview)

    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self) -> "Component":
        """Load weights now (idempotent). Returns self."""
        if not self._loaded:
            self.setup()
            self._loaded = True
        return self

    def __call__(
        self,
        inputs: Data,
        seed: Any = None,
        *,
        progress: Callable[[int], None] | None = None,
        work: Callable[[int, int, str], None] | None = None,
        preview: "Callable[[Callable[[], Data], list[int]], None] | None" = None,
        **given: Data,
    ) -> Data:
        """Run on a batch. ``seed``: int (item *i* gets ``seed + i``), a list (one per item) or a ``torch.Generator``.
        ``progress(items finished)``; ``work(done, total, unit)`` as ``run`` calls :meth:`report_progress`;
        ``preview(make, items)`` when it reports a preview: ``make()`` gives the outputs so far of the batch's
        ``items``; ``given``: the ``takes`` inputs, chunked with ``inputs``. A LoomError on a bad input, or an output
        breaking its layout."""
        name = type(self).__name__
        if not isinstance(inputs, self.input_type):
            raise LoomError(f"{name} takes {self.input_type.kind}, got {type(inputs).__name__}")
        n = len(inputs)
        if not n:
            raise LoomError(f"{name} was called with an empty batch")
        self._check_given(given, n)
        gens = make_generators(item_seeds(seed, n))
        self.load()
        size = self.micro_batch or n
        chunks = -(-n // size)
        outputs: list[Data] = []
        for number, start in enumerate(range(0, n, size)):
            idx = list(range(start, min(start + size, n)))
            pad = size - len(idx) if self.micro_batch else 0
            rows = idx + [idx[-1]] * pad
            chunk, chunk_given = inputs.take(rows), {key: value.take(rows) for key, value in given.items()}
            chunk_gens = [gens[i] for i in idx] + make_generators([0] * pad)
            listening = work is not None or preview is not None
            if listening:
                self._work_listener = self._listener(work, preview, number, chunks, idx)
            try:
                out = self.run(chunk, chunk_gens, **chunk_given)
            finally:
                if listening:
                    self._work_listener = None
            if not isinstance(out, self.output_type):
                raise LoomError(f"{name}.run returned {type(out).__name__}, not its declared {self.output_type.kind}")
            problem = out.problem()  # checked here so that no broken output reaches a file
            if problem or len(out) != len(chunk):
                problem = problem or f"{len(out)} items for {len(chunk)} inputs"
                raise LoomError(f"{name} gave a broken {out.kind}: {problem} (a bug in {name}: tell its author)")
            outputs.append(out.take(range(len(idx))) if pad else out)
            if progress is not None:
                progress(idx[-1] + 1)
        return outputs[0] if len(outputs) == 1 else self.output_type.concat(outputs)  # one chunk: no copy

    @staticmethod
    def _listener(work: Any, preview: Any, number: int, chunks: int, idx: list[int]) -> Callable[..., None]:
        """What report_progress tells for chunk ``number`` of ``chunks`` (items ``idx`` of the batch): ``work`` over
        the whole batch (every chunk has the same shape, so it reports the same total), ``preview`` for ``idx``."""

        def listener(done: int, total: int, unit: str, make: "Callable[[], Data] | None" = None) -> None:
            if work is not None:
                work(number * total + done, chunks * total, unit)
            if preview is not None and make is not None:
                preview(lambda: make().take(range(len(idx))), idx)  # a padded chunk's extra rows left out

        return listener

    def _check_given(self, given: Mapping[str, Any], n: int) -> None:
        """An InputError unless ``given`` holds each required ``takes`` name, of its type and ``n`` items, no other."""
        name = type(self).__name__
        for key in sorted(set(self.takes) - set(given) - self.optional):
            raise InputError(f"{name} takes {key} ({self.takes[key].kind}), which was not given: pass {key}=…")
        for key, value in given.items():
            want = self.takes.get(key)
            if want is None:
                raise InputError(f"{name} takes no input {key!r} (it takes: {', '.join(self.takes) or 'none'})")
            if not isinstance(value, want) or len(value) != n:
                got = f"{value.kind} of {len(value)}" if isinstance(value, Data) else type(value).__name__
                raise InputError(f"{name} takes {key} as {want.kind} of {n} item(s), one per input; got {got}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


class Encoder(Component):
    """Turns conditioning input (usually :class:`~loom.core.data.Text`) into an :class:`~loom.core.data.Embedding`."""

    role: ClassVar[str] = "encoder"


class Generator(Component):
    """Makes new data (Image, Latent, Audio) from its input, usually an Embedding; randomness only from generators."""

    role: ClassVar[str] = "generator"
    #: Where ``loom train`` finds this family's :class:`loom.core.training.Trainer`, as ``"module:Class"`` (imported
    #: only when training). None: the generator is not trainable.
    trainer: ClassVar[str | None] = None
    #: A registered Text → Text component that rewrites a typed prompt into the kind of caption this generator was
    #: trained on (``loom generate`` puts it first unless asked not to). None: it reads prompts as typed.
    prompt_completion: ClassVar[str | None] = None


class Postprocessor(Component):
    """Transforms a finished batch (resize, decode a latent, normalise audio, ...)."""

    role: ClassVar[str] = "postprocessor"


ROLES = {c.role: c for c in (Encoder, Generator, Postprocessor)}
