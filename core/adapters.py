"""LoRA adapters as a component option: ``adapters: [{path, scale}, ...]``, each a safetensors file
of low-rank weights (or a folder ``loom train lora`` wrote, holding one) added to a model at setup
with its own scale (0 leaves the model as it is).

A component accepts adapters by mixing :class:`AdapterOptions` into its Config and loading
``config.adapters`` in ``setup()``; the option is then checked when a chain is built (before
anything loads), each file's SHA-256 and scale go into the provenance record and ``loom reproduce``
refuses a changed file, and ``loom.testing`` checks the component against an adapter the test gives
(docs/plugin-guide.md, "Accepting adapters"). This module imports no torch; the diffusion plugin's
``loom.plugins.diffusion.adapters`` is one loader (the diffusers/PEFT layout and kohya's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .component import ComponentConfig

#: The only file format adapters are read from: a safetensors file holds tensors and nothing that runs.
ADAPTER_SUFFIX = ".safetensors"
#: The weights file of an adapter folder (what ``loom train lora`` writes, beside its config.json).
ADAPTER_FILE = "adapter.safetensors"
#: The largest scale (either sign) an adapter may be given.
MAX_SCALE = 4.0


def adapter_file(path: str) -> Path:
    """The safetensors file an adapter's ``path`` names: the file itself, or an adapter folder's
    :data:`ADAPTER_FILE`."""
    given = Path(path).expanduser()
    return given / ADAPTER_FILE if given.is_dir() else given


def check_adapter_file(path: str) -> str:
    """``path`` if it names an existing ``.safetensors`` file or an adapter folder holding one; otherwise a
    ValueError naming it (the config check turns it into one ConfigError line)."""
    file = adapter_file(path)
    if Path(path).expanduser().is_dir():
        if not file.is_file():
            raise ValueError(
                f"adapter folder {path!r} holds no {ADAPTER_FILE}: give a LoRA .safetensors file, or a folder "
                "`loom train lora` wrote"
            )
        return path
    if file.suffix.lower() != ADAPTER_SUFFIX:
        raise ValueError(
            f"adapter {path!r} is not a .safetensors file: Loom reads adapters from safetensors files only "
            "(a .bin/.pt/.ckpt file is a pickle, which can run code when read); convert it to safetensors"
        )
    if not file.is_file():
        raise ValueError(f"adapter file {str(file)!r} does not exist: give the path of a LoRA .safetensors file")
    return path


class Adapter(BaseModel):
    """One LoRA adapter: its safetensors file and the scale its weights are added at. In a spec,
    ``- style.safetensors`` is short for ``- {path: style.safetensors}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(description="LoRA .safetensors file (diffusers/PEFT or kohya layout), or an adapter folder")
    scale: float = Field(
        1.0, ge=-MAX_SCALE, le=MAX_SCALE, description="how strongly it acts: 1 as trained, 0 not at all"
    )

    @model_validator(mode="before")
    @classmethod
    def _path_alone(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value

    @field_validator("path")
    @classmethod
    def _safetensors_file(cls, value: str) -> str:
        return check_adapter_file(value)

    def file(self) -> Path:
        """The safetensors file this adapter is read from (:func:`adapter_file`)."""
        return adapter_file(self.path)


class AdapterOptions(ComponentConfig):
    """The ``adapters`` option, mixed into a component's Config."""

    adapters: list[Adapter] = Field(
        default_factory=list,
        description="LoRA adapters loaded into the model at setup, each {path: file.safetensors, scale: 1.0}",
    )
