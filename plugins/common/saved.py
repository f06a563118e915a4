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
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from pydantic_core import PydanticCustomError
from torch import nn

from loom.core import WeightsError
from loom.core.component import describe_validation_error
from loom.core.files import atomic_path

from . import CONFIG_NAME, WEIGHTS_NAME, read_config

#: The largest whole number a trained model's config.json may hold (each is a size: a width, a count).
MAX_SIZE = 2**16
#: What fixes a damaged trained folder.
_REDO = "copy the trained folder again (or download it again) or retrain it"


class SavedConfig(BaseModel):
    """A model's architecture, saved as ``config.json`` beside its weights. ``family`` is the name of
    the component that loads it; keys a config does not declare (from another version) are ignored."""

    model_config = ConfigDict(extra="ignore")

    family: str

    @field_validator("*")
    @classmethod
    def _sizes_are_sizes(cls, value: object) -> object:
        # every whole number here (also in a list) is a size: a damaged file's -5 or 10**9 must not reach torch
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, int) and not isinstance(v, bool) and not 0 <= v <= MAX_SIZE:
                raise PydanticCustomError("size", "a size must be a whole number from 0 to {most}", {"most": MAX_SIZE})
        return value


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
        read through safetensors only; float16 files load into the float32 model. A damaged folder
        (config.json, or a weights file truncated or not fitting the config) is a WeightsError naming the file."""
        folder = Path(folder)
        cfg = cls.config_from(folder)
        with torch.device("meta"):  # shapes only, nothing allocated: the weights are checked against them first
            skeleton = cls._build(cfg, folder)
        tensors = {name: _read_weights(folder, name, part) for name, part in skeleton.weight_files().items()}
        model = cls._build(cfg, folder)
        for name, part in model.weight_files().items():
            part.load_state_dict(tensors[name])
        return model.to(device).eval()

    @classmethod
    def config_from(cls, folder: Path) -> SavedConfig:
        """The folder's ``config.json`` as ``config_class``, or a WeightsError naming the file."""
        try:
            return cls.config_class.model_validate(read_config(folder))
        except ValidationError as err:
            where = repr(str(folder / CONFIG_NAME))
            raise WeightsError(f"{describe_validation_error(err, where)}; {_REDO}".replace("\n", "; ")) from None

    @classmethod
    def _build(cls, cfg: SavedConfig, folder: Path) -> "SavedModel":
        try:
            return cls(cfg)
        except Exception as err:  # torch's own checks (ValueError, AssertionError, ...): sizes that build no network
            where = str(folder / CONFIG_NAME)
            raise WeightsError(f"{where!r} describes no model this Loom can build ({err}); {_REDO}") from None

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


def _read_weights(folder: Path, name: str, part: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors of ``folder/name`` if the file is whole and holds exactly ``part``'s tensors with their shapes
    (``part`` may live on the meta device); otherwise a WeightsError naming the file."""
    from safetensors.torch import load_file

    path = folder / name
    if not path.is_file():
        raise WeightsError(f"{str(folder)!r} has no {name}, which its config.json names; copy the whole trained folder")
    try:
        tensors = load_file(str(path))
    except Exception as err:  # safetensors' own error type, or an OSError: a truncated or damaged file
        raise WeightsError(f"{str(path)!r} is truncated or damaged ({err}); {_REDO}") from None
    wanted = {k: list(v.shape) for k, v in part.state_dict().items()}
    found = {k: list(v.shape) for k, v in tensors.items()}
    if found != wanted:
        key = next((k for k in sorted(set(wanted) | set(found)) if wanted.get(k) != found.get(k)))
        raise WeightsError(
            f"{str(path)!r} does not fit {str(folder / CONFIG_NAME)!r}: tensor {key!r} is "
            f"{found.get(key, 'missing')} in the file, {wanted.get(key, 'unknown')} by the config; {_REDO}"
        )
    return tensors


def _storage(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().contiguous().cpu()
    return t.half() if t.is_floating_point() else t
