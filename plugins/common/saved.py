"""A model that lives in a trained folder, in the manner of diffusers' ``ConfigMixin``/``ModelMixin``:
its pydantic config is ``config.json`` and its weights are ``model.safetensors`` (a family may split
them over more files), read by :meth:`SavedModel.from_folder` and written by :meth:`SavedModel.save`.
A family's model subclasses :class:`SavedModel` with its own :class:`SavedConfig` (a
:class:`TextConditionedConfig` for a family conditioned on text embeddings) and keeps only what is
its own: its network and its sampling. Imports torch: loaded only when a model loads or trains.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from loom.core import WeightsError
from loom.core.files import atomic_path

from . import CONFIG_NAME, WEIGHTS_NAME


class SavedConfig(BaseModel):
    """A model's architecture, saved as ``config.json`` beside its weights. ``family`` is the name of
    the component that loads it; keys a config does not declare (from another version) are ignored."""

    model_config = ConfigDict(extra="ignore")

    family: str


class TextConditionedConfig(SavedConfig):
    """What every first-party family conditioned on the ``text-encoder`` step's embeddings records:
    the side of its square images, and the encoder and width of the token embeddings it was
    trained on (checked against a chain's embeddings before sampling)."""

    image_size: int = 64
    text_dim: int = 384
    encoder: str = "all-MiniLM-L6-v2"


class SavedModel(nn.Module):
    """A ``torch.nn.Module`` built from one :class:`SavedConfig` (kept as ``cfg``), that reads and
    writes a trained folder. Subclasses set ``config_class`` and build their network in
    ``__init__(cfg)`` after calling ``super().__init__(cfg)``."""

    config_class: ClassVar[type[SavedConfig]] = SavedConfig

    def __init__(self, cfg: SavedConfig):
        super().__init__()
        self.cfg = cfg

    def weight_files(self) -> dict[str, nn.Module]:
        """The folder's safetensors files and the part of the model each holds: by default the
        whole model in ``model.safetensors``."""
        return {WEIGHTS_NAME: self}

    @classmethod
    def from_folder(cls, folder: "str | Path", device: str = "cpu") -> "SavedModel":
        """The model a folder written by :meth:`save` holds, on ``device``, in eval mode. Weights are
        read through safetensors only; float16 files load into the float32 model."""
        from safetensors.torch import load_file

        folder = Path(folder)
        model = cls(cls.config_class.model_validate(json.loads((folder / CONFIG_NAME).read_text())))
        for name, part in model.weight_files().items():
            if not (folder / name).is_file():
                raise WeightsError(
                    f"{str(folder)!r} has no {name}, which its config.json names; copy the whole trained folder"
                )
            part.load_state_dict(load_file(str(folder / name)))
        return model.to(device).eval()

    def save(self, folder: "str | Path", training: dict | None = None) -> Path:
        """Write ``config.json`` and the weight files into ``folder``, each atomically. Floating-point
        weights are stored as float16, which halves the shipped files (training checkpoints keep
        full precision). ``training``, a trainer's record of the run, goes into the config first."""
        from safetensors.torch import save_file

        if training is not None:
            self.cfg = self.cfg.model_copy(update={"training": training})
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, part in self.weight_files().items():
            # atomic_path also gives the file the usual mode (safetensors writes it private)
            with atomic_path(folder / name) as tmp:
                save_file({k: _storage(v) for k, v in part.state_dict().items()}, str(tmp))
        with atomic_path(folder / CONFIG_NAME) as tmp:
            tmp.write_text(json.dumps(self.cfg.model_dump(), indent=2) + "\n")
        return folder


def _storage(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().contiguous().cpu()
    return t.half() if t.is_floating_point() else t
