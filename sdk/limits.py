"""Limits: how much a spec, a prompts file, a record or a call may ask of Loom.

Small inputs can ask for huge work (a spec of a few hundred bytes whose YAML aliases expand to
gigabytes, ``--size 8192``, a two-hour spoken prompt). Each such request is measured against
:class:`Limits` *before* any weights load or memory is allocated, and refused with one line
that names the limit and how to raise it.

The limits in force come from, last one winning: the defaults below; environment variables
``LOOM_LIMIT_<NAME>`` (``LOOM_LIMIT_PIXELS=67108864``); :func:`configure` in Python (``loom
serve`` passes its own). Raising a limit is a deliberate choice; none can be switched off.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from loom.core.errors import ConfigError, InputError

ENV_PREFIX = "LOOM_LIMIT_"


class Limits(BaseModel):
    """The bounds Loom enforces. Every field is a positive number; see the module docstring for
    how to raise one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Bytes of a spec file (YAML or JSON) or spec text.
    spec_bytes: int = Field(default=1_000_000, gt=0)
    #: Nesting depth of a spec (mappings and lists inside each other).
    spec_depth: int = Field(default=32, gt=0)
    #: Values (mappings, lists, scalars) in a spec after YAML aliases are expanded.
    spec_nodes: int = Field(default=100_000, gt=0)
    #: Pixels of one image (width × height): 4096 × 4096 by default.
    pixels: int = Field(default=4096 * 4096, gt=0)
    #: Items (prompts × count) in one call, one ``loom generate -n``, one ``loom run``.
    items: int = Field(default=10_000, gt=0)
    #: Seconds of one spoken prompt.
    audio_seconds: float = Field(default=60.0, gt=0)
    #: Bytes of the provenance record embedded in one output file.
    record_bytes: int = Field(default=16 * 1024 * 1024, gt=0)

    @classmethod
    def from_env(cls, env: "dict[str, str] | None" = None, **overrides: Any) -> "Limits":
        """The defaults, then ``LOOM_LIMIT_*`` variables, then ``overrides``."""
        env = dict(os.environ if env is None else env)
        given = {name: env[ENV_PREFIX + name.upper()] for name in cls.model_fields if ENV_PREFIX + name.upper() in env}
        try:
            return cls.model_validate({**given, **overrides})
        except ValidationError as err:
            e = err.errors()[0]
            name = str(e["loc"][0]) if e["loc"] else "?"
            raise ConfigError(
                f"limit {name!r} = {e.get('input')!r} is invalid ({e['msg']}); "
                f"set {ENV_PREFIX}{name.upper()} to a positive number"
            ) from None

    def check(self, name: str, value: float, what: str) -> None:
        """A :class:`LimitError` when ``value`` (``what``, e.g. "prompt 'said.wav'") is over limit ``name``."""
        if value > getattr(self, name):
            self.refuse(name, f"{what} is {_number(value)}")

    def refuse(self, name: str, what: str) -> None:
        """Raise the :class:`LimitError` for limit ``name``: ``what`` ("spec 'a.yaml' nests deeper")
        is over it. For a measure stopped as soon as it passed the limit, whose full value is unknown."""
        raise LimitError(
            f"{what}, over the limit of {_number(getattr(self, name))} {_UNITS[name]}; "
            f"raise it with {ENV_PREFIX}{name.upper()}=… or loom.limits.configure({name}=…)"
        )


def pixels_of(size: Any) -> int | None:
    """The pixels of an image asked for by a ``size`` option: by Loom's convention an int is the
    image's longer side (so at most size × size pixels) and a pair is its [height, width]. None for
    any other value. ``loom generate --size`` and every spec step's ``size`` option are checked by it."""
    if isinstance(size, int) and not isinstance(size, bool):
        return size * size
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(type(x) is int for x in size):
        return int(size[0] * size[1])
    return None


_UNITS = {
    "spec_bytes": "bytes for a spec",
    "spec_depth": "levels of nesting in a spec",
    "spec_nodes": "values in a spec (after YAML aliases)",
    "pixels": "pixels per image",
    "items": "items per call",
    "audio_seconds": "seconds per spoken prompt",
    "record_bytes": "bytes for a record",
}


def _number(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:,.4g}"


class LimitError(InputError):
    """A request over one of Loom's :class:`Limits`."""


_configured: dict[str, Any] = {}


def current() -> Limits:
    """The limits in force now: defaults, environment, then :func:`configure`."""
    return Limits.from_env(**_configured)


def configure(**limits: Any) -> Limits:
    """Set limits for this process (``configure(pixels=8192 * 8192)``); ``configure()`` with
    nothing goes back to the defaults and environment. Returns the limits now in force."""
    Limits.from_env(**limits)  # refuse a bad value here, not at the next check
    _configured.clear()
    _configured.update(limits)
    return current()
