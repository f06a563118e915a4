"""The conformance checks: one small function per promise of the component contract.

Each check either returns (passed), raises :class:`Failed` with what the component did, or
raises :class:`Skipped` with why it does not apply (derived from the component's
:class:`~loom.core.Capabilities`). :func:`run_checks` turns them into a :class:`Report`.
Checks test the contract, not the quality of a component's outputs.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tempfile
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Literal

from loom.core.component import Capabilities, Component, ComponentConfig
from loom.core.data import DATA_TYPES, Audio, Data, Embedding, Image, Latent, Text
from loom.core.errors import ConfigError, LoomError
from loom.core.hookspecs import hookimpl

#: The encoder name and width of the kit's example embeddings. A generator that only accepts
#: embeddings from one encoder takes ``inputs=`` instead (see :func:`check_component`).
EXAMPLE_ENCODER = "loom-testing"
EXAMPLE_TEXT_DIM = 32
EXAMPLE_PROMPTS = [
    "a small red circle in the top left on a blue background",
    "a large green square in the center on a white background",
    "a yellow triangle at the bottom on a black background",
    "a purple circle on the right and a small orange square on the left on a gray background",
]


class Failed(Exception):
    """Raised by a check: what the component did that breaks the contract."""


class Skipped(Exception):
    """Raised by a check: why it does not apply to this component."""


class ConformanceError(LoomError):
    """A component does not honour the component contract (the message lists each failed check)."""


# -- results ----------------------------------------------------------------------------------


@dataclass
class CheckResult:
    component: str
    check: str
    status: Literal["passed", "failed", "skipped"]
    #: failed: what the component did and what the contract says; skipped: why.
    message: str = ""

    def __str__(self) -> str:
        if self.status == "failed":
            return self.message
        tail = f" ({self.message})" if self.message else ""
        return f"component {self.component!r} {self.status} check {self.check!r}{tail}"


@dataclass
class Report:
    """The results of a conformance run. ``ok`` needs no failure *and* at least one check passed,
    so a run that skipped everything is not mistaken for a pass."""

    results: list[CheckResult] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        counts = {"passed": 0, "failed": 0, "skipped": 0}
        for r in self.results:
            counts[r.status] += 1
        return counts

    @property
    def ran(self) -> int:
        """Checks that ran to a verdict (passed or failed)."""
        return self.counts["passed"] + self.counts["failed"]

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def skipped(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == "skipped"]

    @property
    def ok(self) -> bool:
        return not self.failures and self.counts["passed"] > 0

    def status(self, check: str, component: str | None = None) -> str:
        """The status of one check (of ``component``, if the report covers several)."""
        for r in self.results:
            if r.check == check and (component is None or r.component == component):
                return r.status
        raise KeyError(check)

    def raise_for_failures(self) -> "Report":
        """Raise a :class:`ConformanceError` listing every failure (or saying nothing ran)."""
        if self.failures:
            raise ConformanceError("\n".join(str(r) for r in self.failures))
        if not self.ok:
            raise ConformanceError(
                f"no conformance check ran: {'; '.join(str(r) for r in self.skipped) or 'none selected'}"
            )
        return self

    def __str__(self) -> str:
        c = self.counts
        components = sorted({r.component for r in self.results if r.check != "registers"})
        head = (
            f"loom conformance: {len(components)} component(s), {len(self.results)} checks: "
            f"{c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped"
        )
        return "\n".join([head] + [f"  {r}" for r in self.results if r.status != "passed"])


# -- example data -----------------------------------------------------------------------------


def example_inputs(data_type: type[Data], count: int, seed: int = 0) -> Data:
    """``count`` small, distinct, well-formed items of ``data_type``; item *i* is the same
    whatever ``count`` is, so batches built from them can be compared item by item."""
    import torch

    if issubclass(data_type, Text):
        return Text(
            [
                EXAMPLE_PROMPTS[i % len(EXAMPLE_PROMPTS)] + ("" if i < len(EXAMPLE_PROMPTS) else f" {i}")
                for i in range(count)
            ]
        )
    gens = [torch.Generator().manual_seed(seed * 1000 + i) for i in range(count)]
    if issubclass(data_type, Embedding):
        length = 6
        tokens = torch.stack([torch.randn(length, EXAMPLE_TEXT_DIM, generator=g) for g in gens])
        mask = torch.stack([(torch.arange(length) < 2 + i % (length - 1)).float() for i in range(count)])
        pooled = torch.nn.functional.normalize((tokens * mask[..., None]).sum(1), dim=-1)
        return Embedding(tokens=tokens, mask=mask, encoder=EXAMPLE_ENCODER, pooled=pooled)
    if issubclass(data_type, Latent):
        return Latent(torch.stack([torch.randn(4, 8, 8, generator=g) for g in gens]), space=EXAMPLE_ENCODER)
    if issubclass(data_type, Image):
        return Image(torch.stack([torch.rand(3, 16, 16, generator=g) for g in gens]))
    if issubclass(data_type, Audio):
        return Audio(torch.stack([torch.rand(1, 1600, generator=g) - 0.5 for g in gens]), sample_rate=16000)
    raise TypeError(f"no example inputs for {data_type!r}")


def example_given(takes: "typing.Mapping[str, type[Data]]", count: int) -> dict[str, Data]:
    """``count`` example items for each named input in ``takes`` (item *i* goes with main input *i*): each name its
    own items, and an Image named ``mask`` made as a request's mask is (the same grey in all three channels)."""
    given = {}
    for k, (name, kind) in enumerate(takes.items(), start=1):
        batch = example_inputs(kind, count, seed=k)
        if name == "mask" and isinstance(batch, Image):
            batch = Image(batch.pixels[:, :1].repeat(1, 3, 1, 1))
        given[name] = batch
    return given


def malformed_inputs(good: Data) -> tuple[Data, str] | None:
    """A batch of the right type whose items are shaped wrongly, and what is wrong with it."""
    import torch

    if isinstance(good, Embedding):
        pad = torch.zeros(*good.tokens.shape[:-1], 3)
        pooled = None if good.pooled is None else torch.cat([good.pooled, torch.zeros(len(good), 3)], dim=1)
        return Embedding(
            torch.cat([good.tokens, pad], dim=-1), good.mask, good.encoder, pooled
        ), "embeddings 3 wider than usual"
    if isinstance(good, Image):
        return Image(torch.cat([good.pixels, good.pixels[:, :1]], dim=1)), "images with 4 channels"
    if isinstance(good, Latent):
        return Latent(
            torch.cat([good.tensor, good.tensor[:, :1]], dim=1), good.space
        ), "latents with one channel too many"
    if isinstance(good, Audio):
        return Audio(good.waveforms[:, 0], good.sample_rate), "waveforms without a channel axis"
    return None


def difference(a: Data, b: Data) -> float:
    """Largest absolute difference between two batches (inf when their types, shapes or
    non-tensor fields differ)."""
    if type(a) is not type(b) or len(a) != len(b):
        return math.inf
    worst = 0.0
    for f in fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if hasattr(x, "shape") and hasattr(y, "shape"):
            if tuple(x.shape) != tuple(y.shape):
                return math.inf
            if x.numel():
                worst = max(worst, float((x.double() - y.double()).abs().max()))
        elif x != y:
            return math.inf
    return worst


# -- the component under test -----------------------------------------------------------------


class Subject:
    """One component class under test, with the config and inputs to test it on (``given``: the named inputs of its
    ``takes`` that the test chooses; the kit makes examples of the others). The loaded component is shared by the
    checks that only call it, so weights load once per run."""

    def __init__(
        self,
        cls: type[Component],
        name: str | None = None,
        config: dict | None = None,
        inputs: "Data | Callable[[int], Data] | None" = None,
        plugin: Any = None,
        given: "dict[str, Data | Callable[[int], Data]] | None" = None,
        adapter: "str | os.PathLike | None" = None,
    ):
        self.cls = cls
        self.adapter = None if adapter is None else str(adapter)
        self.name = name or cls.__name__
        self.config = dict(config or {})
        self._inputs = inputs
        self.plugin = plugin
        self._given = dict(given or {})
        stray = sorted(set(self._given) - set(self.takes))
        if stray:  # a typo in a test would otherwise test the kit's examples instead, silently
            taken = ", ".join(self.takes) or "none"
            raise ValueError(f"given= names inputs that {self.name!r} does not take: {stray} (it takes: {taken})")
        self._loaded: Component | None = None
        self._load_error: str | None = None

    @property
    def capabilities(self) -> Capabilities:
        caps = getattr(self.cls, "capabilities", None)
        return caps if isinstance(caps, Capabilities) else Capabilities()

    def requires(self, flag: str, why: str = "") -> Capabilities:
        """Its capabilities, once it is known to declare ``flag`` true; Skipped (saying so, then
        ``why``) when it declares it false."""
        caps = self.capabilities
        if not getattr(caps, flag):
            raise Skipped(f"it declares capabilities.{flag} = False{why}")
        return caps

    def compare(self, a: Data, b: Data, what: str, hint: str = "") -> None:
        """Failed when outputs ``a`` and ``b`` differ by more than its declared tolerance, the
        message saying that ``what`` differ by how much (then ``hint``)."""
        tolerance = self.capabilities.tolerance
        diff = difference(a, b)
        if diff > tolerance:
            raise Failed(f"{what} differ by {diff:.3g} (tolerance {tolerance}){hint}")

    def build(self, **overrides: Any) -> Component:
        return self.cls({**self.config, **overrides})

    @property
    def takes_adapters(self) -> bool:
        """Whether its Config has the ``adapters`` option (:class:`loom.core.AdapterOptions`)."""
        config = getattr(self.cls, "Config", None)
        return "adapters" in getattr(config, "model_fields", {})

    @property
    def takes(self) -> "typing.Mapping[str, type[Data]]":
        """Its named inputs (``takes``), or none when it declares something else there (check 'data_types' says)."""
        takes = getattr(self.cls, "takes", None)
        return takes if isinstance(takes, typing.Mapping) else {}

    def inputs(self, count: int, seed: int = 0) -> Data:
        if self._inputs is None:
            return example_inputs(self.cls.input_type, count, seed)
        return reuse(self._inputs, count, seed)

    def given(self, count: int) -> dict[str, Data]:
        """Every named input it takes, optional ones too, as ``count`` items aligned with ``inputs(count)``."""
        made = example_given({k: v for k, v in self.takes.items() if k not in self._given}, count)
        return {name: reuse(self._given[name], count) if name in self._given else made[name] for name in self.takes}

    def loaded(self) -> Component:
        """The shared loaded component; Skipped if it cannot be built or loaded (other checks report why)."""
        if self._loaded is None and self._load_error is None:
            try:
                self._loaded = self.build().load()
            except Exception as err:
                self._load_error = f"{type(err).__name__}: {err}"
        if self._load_error:
            raise Skipped(f"building and loading it raised {self._load_error} (check 'load_idempotent' reports it)")
        return self._loaded

    def call(self, component: Component, inputs: Data, seed: Any, **kwargs: Any) -> Data:
        """A call whose failure is reported by check 'call_output'; here it skips the check."""
        try:
            return component(inputs, seed, **kwargs)
        except Exception as err:
            raise Skipped(f"a call raised {type(err).__name__}: {err} (check 'call_output' reports it)") from None


def reuse(source: "Data | Callable[[int], Data]", count: int, seed: int = 0) -> Data:
    """``count`` items from a test's batch (its items reused in turn, from item ``seed``) or function ``count → batch``."""
    if callable(source):
        return source(count)
    n = len(source)
    return source.take([(i + seed) % n for i in range(count)])


# -- the checks -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    name: str
    contract: str
    run: Callable[[Subject], None]
    #: Whether the check calls the component (and so needs a device it runs on).
    calls: bool = True


CHECKS: list[Check] = []


def check(name: str, contract: str, calls: bool = True):
    def add(fn):
        CHECKS.append(Check(name, contract, fn, calls))
        return fn

    return add


@check(
    "config_defaults",
    "Config is a pydantic ComponentConfig whose default values pass its own validation, "
    "and the component builds from them (plus the options the test gives)",
    calls=False,
)
def check_config_defaults(s: Subject) -> None:
    from pydantic import BaseModel, ValidationError

    config_cls = s.cls.Config
    if not (isinstance(config_cls, type) and issubclass(config_cls, BaseModel)):
        raise Failed(f"its Config is {config_cls!r}, not a pydantic model")
    if not issubclass(config_cls, ComponentConfig):
        raise Failed(
            f"its Config {config_cls.__name__} subclasses BaseModel but not loom.core.ComponentConfig (which rejects unknown options)"
        )
    values = {}
    for name, f in config_cls.model_fields.items():
        if f.is_required():
            if name not in s.config:
                raise Failed(
                    f"option {name!r} has no default and the test gave none (pass config={{{name!r}: ...}} to the kit)"
                )
            continue
        values[name] = f.get_default(call_default_factory=True)
    try:
        config_cls.model_validate({**values, **s.config})
    except ValidationError as err:
        raise Failed(
            f"its default config does not pass its own validation: {err.errors()[0]['loc']}: {err.errors()[0]['msg']}"
        ) from None
    try:
        s.build()
    except Exception as err:
        raise Failed(f"building it from its default config raised {type(err).__name__}: {err}") from None


def bad_values(field_info) -> list[tuple[Any, str]]:
    """Values a config field must reject, each with why: outside its bounds, not among its
    choices, or of the wrong type for a scalar field."""
    import annotated_types as at

    found = []
    for m in field_info.metadata:
        if isinstance(m, at.Ge):
            found.append((m.ge - 1, f"below its minimum {m.ge}"))
        elif isinstance(m, at.Gt):
            found.append((m.gt, f"not above its lower bound {m.gt}"))
        elif isinstance(m, at.Le):
            found.append((m.le + 1, f"above its maximum {m.le}"))
        elif isinstance(m, at.Lt):
            found.append((m.lt, f"not below its upper bound {m.lt}"))
    ann = field_info.annotation
    args = [a for a in typing.get_args(ann) if a is not type(None)] or [ann]
    if typing.get_origin(ann) is Literal:
        choices = typing.get_args(ann)
        found.append(("not-one-of-the-choices", f"not one of {list(choices)}"))
    elif all(a in (int, float, str, bool) or typing.get_origin(a) is Literal for a in args):
        found.append((["a", "list"], f"a list, not {' or '.join(getattr(a, '__name__', str(a)) for a in args)}"))
    return found


@check(
    "config_rejects_bad_values",
    "building the component with an unknown option, or with a value outside an "
    "option's type, bounds or choices, raises loom.core.ConfigError",
    calls=False,
)
def check_config_rejects_bad_values(s: Subject) -> None:
    from pydantic import BaseModel

    if not (isinstance(s.cls.Config, type) and issubclass(s.cls.Config, BaseModel)):
        raise Skipped("its Config is not a pydantic model (check 'config_defaults' reports it)")
    tries = [("not_an_option_xyz", 1, "an unknown option")]
    for name, f in s.cls.Config.model_fields.items():
        tries += [(name, value, why) for value, why in bad_values(f)]
    problems = []
    for name, value, why in tries:
        try:
            s.build(**{name: value})
        except ConfigError:
            continue
        except Exception as err:
            problems.append(f"option {name!r} = {value!r} ({why}) raised {type(err).__name__}: {err}")
        else:
            problems.append(f"option {name!r} = {value!r} ({why}) was accepted")
    if problems:
        raise Failed(f"of {len(tries)} bad configs, " + "; ".join(problems))


@check(
    "data_types",
    "input_type and output_type are Loom data types (Text, Embedding, Latent, Image, Audio "
    "or subclasses), so chains can be type-checked before anything loads",
    calls=False,
)
def check_data_types(s: Subject) -> None:
    for attr in ("input_type", "output_type"):
        t = getattr(s.cls, attr, None)
        if not (isinstance(t, type) and any(issubclass(t, d) for d in DATA_TYPES.values())):
            raise Failed(f"its {attr} is {t!r}, not one of the data types {', '.join(DATA_TYPES)}")
    takes, optional = getattr(s.cls, "takes", {}), getattr(s.cls, "optional", frozenset())
    if not isinstance(takes, typing.Mapping):
        raise Failed(f"its takes is {takes!r}, not a mapping of input names to data types")
    for name, t in takes.items():
        if not (isinstance(t, type) and any(issubclass(t, d) for d in DATA_TYPES.values())):
            raise Failed(f"its takes gives input {name!r} the type {t!r}, not one of the data types")
    if not set(optional) <= set(takes):
        raise Failed(f"its optional names {sorted(set(optional) - set(takes))}, which are not in its takes")


@check(
    "lazy_import",
    "importing and registering the plugin and building the component import no torch "
    "(or other heavy library) and open no weights file: both belong in setup()",
    calls=False,
)
def check_lazy_import(s: Subject) -> None:
    module, qualname = s.cls.__module__, s.cls.__qualname__
    if "<locals>" in qualname or module == "__main__":
        raise Skipped(f"{qualname} is defined inside a function or __main__, so a fresh interpreter cannot import it")
    plugin_module = getattr(s.plugin, "__name__", None) if isinstance(s.plugin, type(sys)) else None
    job = {"module": module, "qualname": qualname, "config": s.config, "plugin_module": plugin_module}
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    try:
        out = subprocess.run(
            [sys.executable, "-m", "loom.testing.probe", json.dumps(job, default=str)],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
    except subprocess.TimeoutExpired:
        raise Failed("importing and building it in a fresh interpreter took over 5 minutes") from None
    lines = [line for line in out.stdout.splitlines() if line.startswith("LOOM-PROBE ")]
    if not lines:
        raise Failed(f"the import probe crashed: {(out.stderr or out.stdout).strip()[-500:]}")
    report = json.loads(lines[-1][len("LOOM-PROBE ") :])
    problems = [f"imported {name} (first from {where})" for name, where in sorted(report["heavy"].items())]
    problems += [f"opened weights file {path!r}" for path in report["opened"]]
    if problems:
        raise Failed("importing, registering and building it " + " and ".join(problems))
    if report["error"]:
        raise Skipped(f"in a fresh interpreter, importing and building it raised {report['error']}")


@check("load_idempotent", "load() runs setup() once however often it is called, returns the component, and sets loaded")
def check_load_idempotent(s: Subject) -> None:
    component = s.build()
    calls = []
    setup = component.setup

    def counting_setup():
        calls.append(1)
        return setup()

    component.setup = counting_setup
    if component.loaded:
        raise Failed("loaded is True before load() was called")
    try:
        first = component.load()
        second = component.load()
    except Exception as err:
        raise Failed(f"load() raised {type(err).__name__}: {err}") from None
    if first is not component or second is not component:
        raise Failed(f"load() returned {first!r} and {second!r}, not the component itself")
    if not component.loaded:
        raise Failed("loaded is still False after load()")
    if len(calls) != 1:
        raise Failed(f"two load() calls ran setup() {len(calls)} times")


@check(
    "call_output",
    "a call returns the declared output type, one well-formed item per input, for a single item and for a batch",
)
def check_call_output(s: Subject) -> None:
    component = s.loaded()
    out_type = s.cls.output_type
    for count in (1, 3):
        inputs = s.inputs(count)
        try:
            out = component(inputs, seed=7, **s.given(count))
        except Exception as err:
            raise Failed(
                f"a call on {count} {s.cls.input_type.kind} item(s) raised {type(err).__name__}: {err}"
            ) from None
        if not isinstance(out, out_type):
            raise Failed(f"a call on {count} item(s) returned {type(out).__name__}, but it declares {out_type.kind}")
        if len(out) != count:
            raise Failed(f"a call on {count} item(s) returned {len(out)}")
        problem = out.problem()  # the engine checks each chunk; this checks them joined
        if problem:
            raise Failed(f"a call on {count} item(s) returned a malformed batch: {problem}")


@check(
    "seed_determinism",
    "the same inputs with the same seed give the same output (twice in one "
    "component, and in a second component built from the same config)",
)
def check_seed_determinism(s: Subject) -> None:
    s.requires("deterministic")
    inputs, given = s.inputs(3), s.given(3)
    component = s.loaded()
    first = s.call(component, inputs, seed=11, **given)
    again = s.call(component, inputs, seed=11, **given)
    s.compare(first, again, "two calls with seed 11 gave outputs that")
    other = s.build()
    try:
        other.load()
    except Exception as err:
        raise Skipped(
            f"loading a second component raised {type(err).__name__}: {err} (check 'load_idempotent' reports it)"
        ) from None
    s.compare(
        first,
        s.call(other, inputs, seed=11, **given),
        "two components built from the same config gave outputs for seed 11 that",
        "; is something drawn from the global RNG in setup()?",
    )


@check(
    "seeds_differ",
    "seeds 1 and 2 give different outputs, unless it declares capabilities.uses_seed = False, "
    "and then they give the same output",
)
def check_seeds_differ(s: Subject) -> None:
    caps = s.capabilities
    component, inputs, given = s.loaded(), s.inputs(1), s.given(1)
    first = s.call(component, inputs, seed=[1], **given)
    other = s.call(component, inputs, seed=[2], **given)
    if caps.uses_seed:
        if difference(first, other) <= caps.tolerance:
            raise Failed(
                "seeds 1 and 2 gave the same output: draw each item's randomness from its generator, "
                "or declare capabilities.uses_seed = False if it has none"
            )
        return
    s.requires("deterministic", ", so outputs cannot be compared")
    if difference(first, s.call(component, inputs, seed=[1], **given)) > caps.tolerance:
        raise Skipped("two identical calls already differ (check 'seed_determinism' reports it)")
    s.compare(first, other, "it declares capabilities.uses_seed = False, but seeds 1 and 2 gave outputs that")


@check(
    "batch_invariance",
    "an item gives the same output alone and at any position inside a batch, "
    "given its own seed and named inputs (within capabilities.tolerance)",
)
def check_batch_invariance(s: Subject) -> None:
    s.requires("batchable")
    caps = s.requires("deterministic", ", so outputs cannot be compared")
    component = s.loaded()
    pool, pool_given = s.inputs(4), s.given(4)

    def call(order: list[int], seeds: list[int]) -> Data:  # items of the pool, each with its own given inputs
        return s.call(component, pool.take(order), seed=seeds, **{k: v.take(order) for k, v in pool_given.items()})

    alone = call([0], [5])
    if difference(alone, call([0], [5])) > caps.tolerance:
        raise Skipped("two identical calls already differ (check 'seed_determinism' reports it)")
    for size in (3, (component.micro_batch or 2) + 1):
        for position in sorted({0, size // 2, size - 1}):
            order = [1 + (i % 3) for i in range(size)]
            order[position] = 0
            seeds = [100 + i for i in range(size)]
            seeds[position] = 5
            out = call(order, seeds)
            s.compare(
                alone, out.take([position]), f"an item's output alone and at position {position} of a batch of {size}"
            )


@check(
    "weights_round_trip",
    "save_weights(folder) writes a folder that the config option "
    "capabilities.weights_option reads back into a component with the same outputs",
)
def check_weights_round_trip(s: Subject) -> None:
    caps = s.requires("has_weights")
    if not caps.weights_option:
        raise Skipped("it declares no weights folder format (capabilities.weights_option is None)")
    if caps.weights_option not in s.cls.Config.model_fields:
        raise Failed(f"capabilities.weights_option names {caps.weights_option!r}, which is not a config option")
    component = s.loaded()
    inputs, given = s.inputs(2), s.given(2)
    before = s.call(component, inputs, seed=3, **given)
    with tempfile.TemporaryDirectory(prefix="loom-round-trip-") as folder:
        try:
            component.save_weights(folder)
            copy = s.build(**{caps.weights_option: folder})
            after = copy(inputs, seed=3, **given)
        except Exception as err:
            raise Failed(f"saving its weights and loading them back raised {type(err).__name__}: {err}") from None
    s.compare(before, after, "outputs before saving and after loading the saved folder")


@check("progress", "a call reports progress through progress(finished), with counts that rise to the batch size")
def check_progress(s: Subject) -> None:
    seen: list[int] = []
    s.call(s.loaded(), s.inputs(3), seed=1, progress=seen.append, **s.given(3))
    if not seen or seen[-1] != 3 or seen != sorted(seen):
        raise Failed(f"progress was called with {seen} for a batch of 3")


@check(
    "run_hooks",
    "in a pipeline, loom_pipeline_start, loom_step_end and loom_pipeline_end fire once each with the step's output",
)
def check_run_hooks(s: Subject) -> None:
    from loom.core.pipeline import Pipeline
    from loom.core.plugins import Registry

    fired: dict[str, list] = {"start": [], "step": [], "end": []}
    subject = s

    class Plugin:
        @hookimpl
        def loom_register_components(self, register):
            register("subject", subject.cls)

        @hookimpl
        def loom_pipeline_start(self, seeds):
            fired["start"].append(seeds)

        @hookimpl
        def loom_step_end(self, index, output):
            fired["step"].append((index, output))

        @hookimpl
        def loom_pipeline_end(self, result):
            fired["end"].append(result)

    registry = Registry()
    info = registry.add_plugin(Plugin(), "conformance")
    if info.errors:
        raise Failed(f"registering it raised: {'; '.join(info.errors)}")
    pipeline = Pipeline.from_spec({"steps": [{"component": "subject", "config": s.config}]}, registry)
    pipeline.components[0] = s.loaded()
    try:
        result = pipeline.run(s.inputs(2), seed=4, progress=False, **s.given(2))
    except Exception as err:
        raise Skipped(
            f"a one-step pipeline raised {type(err).__name__}: {err} (check 'call_output' reports calls)"
        ) from None
    counts = {k: len(v) for k, v in fired.items()}
    if counts != {"start": 1, "step": 1, "end": 1}:
        raise Failed(f"hooks fired {counts} times in a one-step run")
    index, output = fired["step"][0]
    if index != 0 or output is not result.output or fired["start"][0] != [4, 5]:
        raise Failed(
            f"loom_step_end got index {index} and {type(output).__name__}; loom_pipeline_start got seeds {fired['start'][0]}"
        )


@check(
    "bad_input_errors",
    "a call on the wrong data type or an empty batch raises a LoomError, and a malformed "
    "batch of the right type either works or raises a LoomError (never a bare library error)",
)
def check_bad_input_errors(s: Subject) -> None:
    component = s.loaded()
    wrong_type = Image if not issubclass(s.cls.input_type, Image) else Text
    attempts = [
        (example_inputs(wrong_type, 1), f"a {wrong_type.kind} batch", True),
        (s.inputs(1).take([]), "an empty batch", True),
    ]
    malformed = malformed_inputs(s.inputs(2))
    if malformed is not None:
        attempts.append((malformed[0], malformed[1], False))
    given = s.given(2)  # so that a step which needs an image is refused for its main input, not for the image
    for inputs, what, must_raise in attempts:
        try:
            component(inputs, seed=0, **{k: v.take(range(len(inputs))) for k, v in given.items()})
        except LoomError:
            continue
        except Exception as err:
            raise Failed(f"a call on {what} raised {type(err).__name__}: {err}") from None
        if must_raise:
            raise Failed(f"a call on {what} returned without error")


#: The name check 'given_inputs' gives an input that no component takes.
STRAY_INPUT = "not_an_input_xyz"


@check(
    "given_inputs",
    "a call without a required named input (takes), or with one it does not take, of another data type or another "
    "count than its inputs, raises a LoomError naming that input; one without an optional input, or with a malformed "
    "one, works or raises a LoomError",
)
def check_given_inputs(s: Subject) -> None:
    component, inputs = s.loaded(), s.inputs(2)
    for what, given, must_name in given_attempts(s):
        try:
            component(inputs, seed=0, **given)
        except LoomError as err:
            if must_name and not re.search(rf"\b{re.escape(must_name)}\b", str(err)):
                raise Failed(f"a call {what} raised a LoomError that does not name {must_name!r}: {err}") from None
            continue
        except Exception as err:
            raise Failed(f"a call {what} raised {type(err).__name__}: {err}") from None
        if must_name:
            raise Failed(f"a call {what} returned without error")


def given_attempts(s: Subject) -> list[tuple[str, dict[str, Data], str | None]]:
    """The calls check 'given_inputs' makes on 2 inputs: what each gives wrongly, its named inputs, and the name the
    LoomError must say (None: the call may work). A component that takes nothing is tried with a stray input only."""
    takes, optional = s.takes, set(getattr(s.cls, "optional", ()))
    given, three = s.given(2), s.given(3)
    stray = example_inputs(Image, 2)
    attempts: list[tuple[str, dict[str, Data], str | None]] = [
        (f"with an input it does not take, {STRAY_INPUT!r}", {**given, STRAY_INPUT: stray}, STRAY_INPUT)
    ]
    for name, kind in takes.items():
        without = {k: v for k, v in given.items() if k != name}
        if name in optional:
            attempts.append((f"without its optional input {name!r}", without, None))
        else:
            attempts.append((f"without its required input {name!r}", without, name))
        other = Text if not issubclass(kind, Text) else Image
        attempts.append((f"with {name!r} as {other.kind}", {**given, name: example_inputs(other, 2)}, name))
        attempts.append((f"with 3 items of {name!r} for 2 inputs", {**given, name: three[name]}, name))
        malformed = malformed_inputs(given[name])
        if malformed is not None:
            attempts.append((f"with {name!r} as {malformed[1]}", {**given, name: malformed[0]}, None))
    return attempts


#: What check 'config_fuzzing' sets each option to, one at a time.
FUZZ_VALUES = (0, -1, 10**12, "junk")


@check(
    "config_fuzzing",
    "each option set to 0, -1, 10**12 or 'junk' is refused with a LoomError when the component is built, "
    "or the component built with it loads and runs (or refuses to, with a LoomError): never another error",
)
def check_config_fuzzing(s: Subject) -> None:
    try:
        baseline = s.build().config.model_dump_json()
    except Exception:
        raise Skipped("it cannot be built from the test's config (check 'config_defaults' reports it)") from None
    tried = {baseline}  # a value that leaves the config as it was, or as another try made it, is not run again
    problems = [
        problem
        for name in s.cls.Config.model_fields
        for value in FUZZ_VALUES
        if (problem := fuzz_problem(s, name, value, tried))
    ]
    if problems:
        raise Failed("; ".join(problems))


def fuzz_problem(s: Subject, name: str, value: Any, tried: set[str]) -> str | None:
    """What goes wrong when option ``name`` is ``value``: None when building refuses it with a
    LoomError, or when the component built with it loads and is called on one item, or refuses
    with a LoomError; otherwise the error, and what to add to the Config."""
    if isinstance(value, str):
        hint = "refuse such values in its Config (e.g. Field(pattern=…) or a validator) or raise a LoomError"
    else:
        hint = "add Field(ge=…)/le=… to its Config"
    stage = "building it"
    try:
        component = s.build(**{name: value})
        key = component.config.model_dump_json()
        if key in tried:
            return None
        tried.add(key)
        stage = "loading it"
        component.load()
        stage = "calling it on one item"
        component(s.inputs(1), seed=0, **s.given(1))
    except LoomError:
        return None
    except Exception as err:
        what = (str(err).splitlines() or [""])[0][:200]
        then = ": " if stage == "building it" else " was accepted, then "
        return f"option {name!r} = {value!r}{then}{stage} raised {type(err).__name__}: {what}; {hint}"
    return None


def adapted(s: Subject, inputs: Data, given: dict, path: str, scale: float) -> Data:
    """The output of a component built with the one adapter ``path`` at ``scale`` (Failed if that raises)."""
    try:
        component = s.build(adapters=[{"path": path, "scale": scale}]).load()
        return component(inputs, seed=5, **given)
    except Exception as err:
        raise Failed(
            f"with adapter {path!r} at scale {scale}, building or calling it raised {type(err).__name__}: {err}"
        )


def misnamed_adapter(path: str, folder: str) -> tuple[str, str]:
    """A copy of the adapter file ``path`` in ``folder`` whose first LoRA module is renamed to one no
    model has (``<module>_kit_missing``), and that name. A refusal names it as the model knows it
    (without a part prefix, kohya's ``_`` read as ``.``), so the check looks for ``kit_missing`` in it."""
    from pathlib import Path

    from safetensors.torch import load_file, save_file

    from loom.core.adapters import adapter_file

    tensors = load_file(adapter_file(path))
    lora = sorted(k for k in tensors if ".lora" in k)
    if not lora:
        raise Failed(f"the adapter the test gave, {path!r}, holds no LoRA tensors (no key has '.lora')")
    module = lora[0].split(".lora", 1)[0]
    missing = f"{module}_kit_missing"
    renamed = {(missing + k[len(module) :] if k.startswith(module + ".") else k): v for k, v in tensors.items()}
    out = Path(folder) / "misnamed.safetensors"
    save_file(renamed, str(out))
    return str(out), missing


def check_adapters(s: Subject) -> None:
    if s.adapter is None:
        raise Skipped(
            "its Config takes adapters, but the test gave no adapter file to check them with "
            "(check_component(..., adapter=FILE) or adapters={name: FILE})"
        )
    inputs, given = s.inputs(2), s.given(2)
    base = s.call(s.loaded(), inputs, seed=5, **given)
    s.compare(adapted(s, inputs, given, s.adapter, 0.0), base, "outputs with the adapter at scale 0 and without it")
    one = adapted(s, inputs, given, s.adapter, 1.0)
    if difference(one, base) == 0:
        raise Failed(f"the adapter {s.adapter!r} at scale 1 changes nothing: is it loaded into the model?")
    s.compare(adapted(s, inputs, given, s.adapter, 1.0), one, "two loads of the adapter at scale 1 gave outputs that")
    with tempfile.TemporaryDirectory(prefix="loom-adapter-") as folder:
        wrong, missing = misnamed_adapter(s.adapter, folder)
        try:
            s.build(adapters=[wrong]).load()(inputs, seed=5, **given)
        except LoomError as err:
            message = str(err)
            if "\n" in message or not re.search(r"kit[._]missing", message) or "misnamed.safetensors" not in message:
                raise Failed(
                    f"an adapter for a module it lacks ({missing!r}) was refused, but not in one line naming the file and the module: {message!r}"
                )
        except Exception as err:
            raise Failed(
                f"an adapter for a module it lacks ({missing!r}) raised {type(err).__name__}, not a LoomError: {err}"
            )
        else:
            raise Failed(f"an adapter for a module it lacks ({missing!r}) was accepted")
    s.compare(s.call(s.loaded(), inputs, seed=5, **given), base, "outputs before and after a refused adapter")


#: Run for a component that takes adapters: on the adapter file the test gives.
ADAPTERS_CHECK = Check(
    "adapters",
    "a component whose Config takes adapters (loom.core.AdapterOptions): an adapter at scale 0 leaves its output "
    "exactly as without it, at scale 1 changes it, two loads give the same output, and an adapter for a module its "
    "model lacks is refused in one line naming the file and the module, leaving loaded components as they were",
    check_adapters,
)


def checks_for(subject: Subject) -> list[Check]:
    """Every check of the contract, and :data:`ADAPTERS_CHECK` for a component that takes adapters."""
    return CHECKS + ([ADAPTERS_CHECK] if subject.takes_adapters else [])


def run_checks(subject: Subject, only: "list[str] | None" = None) -> Report:
    """Run every check (or those named in ``only``) on one subject."""
    report = Report()
    for c in checks_for(subject):
        if only is None or c.name in only:
            report.results.append(run_check(subject, c))
    return report


def run_check(subject: Subject, c: Check) -> CheckResult:
    def result(status, message=""):
        return CheckResult(subject.name, c.name, status, message)

    caps = subject.capabilities
    if c.calls and "cpu" not in caps.devices:
        return result(
            "skipped", f"it declares devices {list(caps.devices)} without cpu, and the kit calls components on cpu"
        )
    try:
        c.run(subject)
    except Skipped as why:
        return result("skipped", str(why))
    except Failed as what:
        return result(
            "failed", f"component {subject.name!r} fails check {c.name!r}: {what}; the contract: {c.contract}"
        )
    except Exception as err:
        return result(
            "failed",
            f"component {subject.name!r} fails check {c.name!r}: it raised {type(err).__name__}: {err}; "
            f"the contract: {c.contract}",
        )
    return result("passed")


def plugin_subjects(
    plugin: Any,
    configs: dict | None = None,
    inputs: dict | None = None,
    given: dict | None = None,
    adapters: dict | None = None,
) -> tuple[list[Subject], list[str], Any]:
    """The subjects for every component a plugin registers, the plugin's registration errors,
    and the plugin object. ``plugin``: a module or object with hooks, a module name, or the
    name of an installed plugin (entry point in the ``loom`` group)."""
    import importlib
    from importlib.metadata import entry_points

    from loom.core.plugins import ENTRY_POINT_GROUP, Registry

    name = getattr(plugin, "__name__", None) or type(plugin).__name__
    if isinstance(plugin, str):
        name = plugin
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == plugin]
        plugin = found[0].load() if found else importlib.import_module(plugin)
    registry = Registry()
    info = registry.add_plugin(plugin, name)
    configs, inputs, given, adapters = configs or {}, inputs or {}, given or {}, adapters or {}
    unknown = sorted((set(configs) | set(inputs) | set(given) | set(adapters)) - set(info.components))
    errors = list(info.errors) + (
        [f"configs, inputs, given inputs or adapters for components it does not register: {unknown}"] if unknown else []
    )
    subjects = [
        Subject(
            registry.get(f"{name}:{c}").cls, c, configs.get(c), inputs.get(c), plugin, given.get(c), adapters.get(c)
        )
        for c in info.components
    ]
    return subjects, errors, plugin


def check_component(
    component: "type[Component] | str",
    config: dict | None = None,
    *,
    inputs: "Data | Callable[[int], Data] | None" = None,
    name: str | None = None,
    plugin: Any = None,
    only: "list[str] | None" = None,
    given: "dict[str, Data | Callable[[int], Data]] | None" = None,
    adapter: "str | os.PathLike | None" = None,
) -> Report:
    """Run the conformance checks on one component, without pytest.

    ``component``: a component class, or a registered name (``plugin:name`` works). ``config``:
    options to build it with (e.g. ``{"weights": folder}``). ``inputs``: a batch (at least one
    item; items are reused) or a function ``count -> batch`` for components that need specific
    inputs (e.g. embeddings from one encoder); by default the kit makes small examples of the
    component's input type. ``given``: the same, per named input of its ``takes`` (e.g.
    ``{"image": images}``); the kit makes examples of the others and passes them all in every call.
    ``adapter``: a LoRA file that fits the component's model, for check "adapters" of a component
    that takes adapters (:class:`loom.core.AdapterOptions`). ``only``: names of the checks to run.
    """
    if isinstance(component, str):
        from loom.core.plugins import get_registry

        entry = get_registry().get(component)
        component, name = entry.cls, name or entry.name
    return run_checks(Subject(component, name, config, inputs, plugin, given, adapter), only)


def check_plugin(
    plugin: Any,
    configs: dict | None = None,
    inputs: dict | None = None,
    only: "list[str] | None" = None,
    given: dict | None = None,
    adapters: dict | None = None,
) -> Report:
    """Run the conformance checks on every component a plugin registers, without pytest.
    ``configs``, ``inputs``, ``given`` and ``adapters`` map component names to what
    :func:`check_component` takes (``adapters``: its ``adapter``)."""
    subjects, errors, _ = plugin_subjects(plugin, configs, inputs, given, adapters)
    report = Report()
    plugin_name = getattr(plugin, "__name__", plugin if isinstance(plugin, str) else type(plugin).__name__)
    report.results.append(registers_result(plugin_name, subjects, errors))
    for s in subjects:
        report.results += run_checks(s, only).results
    return report


def registers_result(plugin_name: str, subjects: list[Subject], errors: list[str]) -> CheckResult:
    """The plugin-level check: it registers at least one component, without errors, under names
    that no installed component of Loom's own has (:func:`first_party_clashes`)."""
    contract = (
        "the plugin registers its components through loom_register_components without errors, under names of its own"
    )
    errors = errors + first_party_clashes(plugin_name, subjects)
    if errors or not subjects:
        what = "; ".join(errors) if errors else "it registered no component"
        return CheckResult(
            str(plugin_name),
            "registers",
            "failed",
            f"plugin {plugin_name!r} fails check 'registers': {what}; the contract: {contract}",
        )
    return CheckResult(str(plugin_name), "registers", "passed")


def first_party_clashes(plugin_name: str, subjects: list[Subject]) -> list[str]:
    """The plugin's component names that an installed first-party plugin registers too. A bare name
    means Loom's own component, so the plugin's would be reachable only as ``plugin:name``."""
    from loom.core.plugins import get_registry

    registry = get_registry()
    ours = {e.name: e for e in registry.components() if registry.is_first_party(e)}
    problems, prefix = [], str(plugin_name).rsplit(".", 1)[-1].replace("_", "-")
    for s in subjects:
        theirs = ours.get(s.name)
        if theirs is not None and registry.plugins[theirs.plugin].source != getattr(s.plugin, "__name__", None):
            problems.append(
                f"its component {s.name!r} has the name of Loom's own {theirs.qualified_name}, which a bare "
                f"{s.name!r} always means; rename it (e.g. '{prefix}-{s.name}')"
            )
    return problems


#: Every result of conformance items run by pytest in this process (summarised by the pytest plugin).
PYTEST_RESULTS: list[CheckResult] = []


def conformance_tests(
    plugin: Any,
    configs: dict | None = None,
    inputs: dict | None = None,
    only: "list[str] | None" = None,
    given: dict | None = None,
    adapters: dict | None = None,
):
    """A pytest test function with one item per (component, check) of ``plugin``. Assign it to
    a ``test_`` name in a test module::

        from loom.testing import conformance_tests
        test_conformance = conformance_tests("my_plugin", configs={"blur": {"radius": 2}})
        # a step that needs particular images for its `takes` gets them per component:
        # conformance_tests("my_plugin", given={"repaint": {"image": my_images}})
        # a component that takes LoRA adapters is checked with one that fits its model:
        # conformance_tests("my_plugin", adapters={"my-generator": "tests/data/lora.safetensors"})

    ``pytest -k seed_determinism`` selects one check; a failure reads "component X fails check
    Y: what it did; the contract: ...", a skip says why the check does not apply.
    """
    import pytest

    subjects, errors, plugin_obj = plugin_subjects(plugin, configs, inputs, given, adapters)
    plugin_name = plugin if isinstance(plugin, str) else getattr(plugin, "__name__", type(plugin).__name__)
    by_name = {c.name: c for c in CHECKS + [ADAPTERS_CHECK]}
    cases = [pytest.param(None, "registers", id=f"{plugin_name}-registers")]
    cases += [
        pytest.param(s, c.name, id=f"{s.name}-{c.name}")
        for s in subjects
        for c in checks_for(s)
        if only is None or c.name in only
    ]

    @pytest.mark.parametrize(("subject", "check_name"), cases)
    def test_conformance(subject, check_name):
        __tracebackhide__ = True
        if subject is None:
            result = registers_result(plugin_name, subjects, errors)
        else:
            result = run_check(subject, by_name[check_name])
        PYTEST_RESULTS.append(result)
        if result.status == "failed":
            pytest.fail(result.message, pytrace=False)
        if result.status == "skipped":
            pytest.skip(f"component {result.component!r}, check {check_name!r}: {result.message}")

    test_conformance.loom_plugin = plugin_obj
    return test_conformance


__all__ = [
    "CHECKS",
    "Check",
    "CheckResult",
    "ConformanceError",
    "Failed",
    "Report",
    "Skipped",
    "Subject",
    "check_component",
    "check_plugin",
    "conformance_tests",
    "example_given",
    "example_inputs",
    "run_checks",
]
