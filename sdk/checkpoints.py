"""A training state on disk: the nested dicts and tensors a :class:`loom.core.training.Trainer`
returns from ``state()``, kept as ``state.safetensors`` + ``state.json`` in a checkpoint folder.

Only ``loom train`` reads and writes these, so they live in the SDK, next to the workflow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def save_state(state: dict[str, Any], folder: Path) -> None:
    """Write a nested state (dicts, lists, tensors, numbers, strings) as ``state.safetensors`` +
    ``state.json`` in ``folder``: tensors through safetensors (never pickle), the structure as JSON."""
    from safetensors.torch import save_file

    tensors: dict[str, Any] = {}

    def pack(obj: Any) -> Any:
        if hasattr(obj, "detach") and hasattr(obj, "dtype"):
            key = f"t{len(tensors)}"
            tensors[key] = obj.detach().contiguous().cpu()
            return {"__tensor__": key}
        if isinstance(obj, dict):
            # keys keep their type (optimiser states are keyed by int)
            return {"__dict__": [[k, pack(v)] for k, v in obj.items()]}
        if isinstance(obj, (list, tuple)):
            return [pack(v) for v in obj]
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        raise TypeError(f"cannot save a {type(obj).__name__} in a training state")

    skeleton = pack(state)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "state.safetensors"))
    (folder / "state.json").write_text(json.dumps(skeleton) + "\n")


def load_state(folder: Path) -> dict[str, Any]:
    """The state :func:`save_state` wrote into ``folder``."""
    from safetensors.torch import load_file

    from loom.core.errors import WeightsError

    try:
        tensors = load_file(str(folder / "state.safetensors"))
        skeleton = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    except Exception as err:  # safetensors' own error, an OSError, invalid JSON: a damaged checkpoint
        raise WeightsError(
            f"checkpoint {str(folder)!r} is damaged ({type(err).__name__}: {err}); resume from an earlier one"
        ) from None

    def unpack(obj: Any) -> Any:
        if isinstance(obj, dict):
            if "__tensor__" in obj:
                return tensors[obj["__tensor__"]]
            return {k: unpack(v) for k, v in obj["__dict__"]}
        if isinstance(obj, list):
            return [unpack(v) for v in obj]
        return obj

    return unpack(skeleton)
