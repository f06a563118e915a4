"""The provenance record: what Loom writes beside every output so that ``loom reproduce`` can make
it again exactly. Its layout is made here; :mod:`loom.outputs` embeds it in files and reads it back.

A record is data: reading one never fetches, imports or runs anything it names.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from dataclasses import fields

from loom.core import Data, Text

#: Version of the record's layout.
RECORD_VERSION = 1


def digest(data: Data, index: int) -> str:
    """SHA-256 of item ``index`` alone (as ``take([index])`` holds it): every field, tensors by
    their shape and float32 values. A record keeps it for inputs that are not text, so that
    ``loom reproduce`` can check that an input given again is the one recorded."""
    item = data.take([index])
    h = hashlib.sha256(data.kind.encode())
    for f in fields(item):  # type: ignore[arg-type]
        value = getattr(item, f.name)
        h.update(f.name.encode())
        if hasattr(value, "detach"):
            array = value.detach().float().contiguous().cpu().numpy()
            h.update(repr(tuple(array.shape)).encode() + array.tobytes())
        else:
            h.update(repr(value).encode())
    return h.hexdigest()


def loom_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("loom")
    except PackageNotFoundError:  # running from a source tree
        return "unknown"


def run_record(pipeline, inputs: Data, facts: dict) -> dict:
    """The record of one run of ``pipeline`` on ``inputs``; ``facts`` is what the engine recorded
    (``loom.core.Pipeline.provenance``: inputs, seeds, timings)."""
    return {
        "loom_record": RECORD_VERSION,
        "loom_version": loom_version(),
        "spec": pipeline.spec.model_dump(mode="json"),
        "components": [
            {
                "step": i + 1,
                "component": e.name,
                "plugin": e.plugin,
                "plugin_version": e.plugin_version,
                "class": f"{e.cls.__module__}.{e.cls.__qualname__}",
            }
            for i, e in enumerate(pipeline.entries)
        ],
        "inputs": facts["inputs"],
        # a non-text input is not kept (audio is large); its digest lets `loom reproduce
        # --input FILE` check that the input given again is the same
        **(
            {}
            if isinstance(inputs, Text)
            else {"input_kind": inputs.kind, "input_sha256": [digest(inputs, i) for i in range(len(inputs))]}
        ),
        "seeds": facts["seeds"],
        "timings": facts["timings"],
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
