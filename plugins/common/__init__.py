"""Shared by Loom's first-party generator families (VAE, GAN, autoregressive).

:class:`TrainedGenerator` is a generator that samples from a trained folder (``config.json`` with
``"family"`` + ``model.safetensors``), the shipped default when no folder is given; mixing in
:class:`SoundOutput` makes its text → sound twin, whose model predicts log-mel spectrograms that
Griffin-Lim turns into waveforms. This module imports no torch; the network building blocks live
in :mod:`.nn`, the mel helpers in :mod:`.mel`, the model that reads and writes a trained folder in
:mod:`.saved` and the trainer that exports it in :mod:`.training`; what the procedural worlds share
is in :mod:`.world` and :mod:`.report`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

from pydantic import Field, field_validator

from loom.core import Audio, Capabilities, ComponentConfig, Embedding, Generator, Image, InputError, WeightsError

#: A trained folder: the model's config (with ``"family"``) and its weights.
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def check_folder(folder: "str | Path", family: str, train: str | None = None) -> Path:
    """``folder`` if it holds a trained model of ``family``; otherwise a WeightsError saying what is
    missing and how to train one (``train``, default ``loom train FAMILY --out FOLDER``)."""
    folder = Path(folder)
    if not (folder / CONFIG_NAME).is_file() or not (folder / WEIGHTS_NAME).is_file():
        hint = ""
        if (folder / "model_index.json").is_file():
            hint = " (it is a diffusers pipeline folder: use the stable-diffusion component with model: this folder)"
        raise WeightsError(
            f"{str(folder)!r} is not a trained {family} folder: it needs config.json and model.safetensors "
            f"(train one with `{train or f'loom train {family} --out {folder}'}`){hint}"
        )
    found = read_config(folder).get("family")
    if found != family:
        raise WeightsError(f"{str(folder)!r} holds a {found!r} model, not a {family!r} one")
    return folder


def read_config(folder: "str | Path") -> dict:
    """A trained folder's ``config.json`` as a mapping; a WeightsError naming the file when it cannot be read or
    is not a JSON object (a damaged copy: the fix is a fresh copy of the folder, or training it again)."""
    path = Path(folder) / CONFIG_NAME
    fix = "copy the trained folder again or retrain it"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WeightsError(f"{str(path)!r} is not valid JSON ({err}); {fix}") from None
    except OSError as err:
        raise WeightsError(f"cannot read {str(path)!r} ({err.strerror or err}); {fix}") from None
    if not isinstance(config, dict):
        raise WeightsError(f"{str(path)!r} holds a JSON {type(config).__name__}, not a model's config object; {fix}")
    return config


def weights_validator(family: str, train: str | None = None):
    """A pydantic validator for a config's ``weights`` field: a folder given there must hold a
    trained ``family`` model, checked when the chain is built (before anything loads)::

        class Config(ComponentConfig):
            weights: str | None = None
            _weights_are_trained = weights_validator("my-family")
    """

    def check(cls, value):
        if value is not None:
            check_folder(value, family, train)
        return value

    return field_validator("weights")(classmethod(check))


#: The devices a ``device`` option may name: checked when a component is built, not deep inside torch.
DEVICES = r"cpu|mps|cuda(:\d+)?"


class TrainedConfig(ComponentConfig):
    weights: str | None = Field(None, description="trained folder; None for the shipped default")
    temperature: float = Field(1.0, ge=0.0, le=3.0, description="scale of the sampling noise")
    device: str = Field("cpu", pattern=f"^({DEVICES})$", description="cpu, cuda, cuda:N or mps")


def check_embeddings(inputs: Embedding, cfg, model: str) -> None:
    """An InputError unless ``inputs`` come from the encoder, and have the width and the pooled
    vector, that ``model`` (its name in the message, e.g. "vae") was trained on, as its config
    ``cfg`` records them (``encoder``, ``text_dim``)."""
    if inputs.encoder != cfg.encoder:
        raise InputError(
            f"this {model} was trained on embeddings from {cfg.encoder!r}, got embeddings from "
            f"{inputs.encoder!r}; use the text-encoder step with model: {cfg.encoder}"
        )
    if inputs.pooled is None or inputs.tokens.shape[-1] != cfg.text_dim:
        raise InputError(f"this {model} needs {cfg.text_dim}-wide token embeddings with a pooled vector")


class TrainedGenerator(Generator):
    """Text embedding → image from a trained folder. Subclasses set ``family`` and
    ``default_weights`` and return their model class from :meth:`model_class`."""

    family: ClassVar[str] = ""
    default_weights: ClassVar[Path]

    Config = TrainedConfig
    input_type = Embedding
    output_type = Image
    capabilities = Capabilities(has_weights=True, weights_option="weights")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        family = cls.family
        base = cls.__dict__.get("Config", TrainedConfig)

        # each family's Config checks the folder against its own family when the chain is built
        class Config(base):
            _weights_are_trained = weights_validator(family)

        Config.__name__ = Config.__qualname__ = f"{cls.__name__}.Config"
        cls.Config = Config

    @classmethod
    def model_class(cls) -> type:
        """The family's model: a :class:`.saved.SavedModel` whose config has ``encoder`` and
        ``text_dim`` and which has ``generate(tokens, mask, pooled, generators, temperature,
        **sampling_options())``. A family imports it inside this method, so that registering the
        plugin imports no torch."""
        raise NotImplementedError(f"{cls.__name__} names no model class")

    def sampling_options(self) -> dict:
        """Extra keyword arguments for the model's ``generate`` (a family's own config options)."""
        return {}

    def setup(self) -> None:
        model_class = self.model_class()
        folder = check_folder(self.config.weights or self.default_weights, self.family)
        self.model = model_class.from_folder(folder, self.config.device)

    def save_weights(self, folder: "str | Path") -> Path:
        return self.model.save(folder)

    def run(self, inputs: Embedding, generators: list) -> Image:
        return Image(self.sample(inputs, generators).float().cpu())

    def sample(self, inputs: Embedding, generators: list):
        """The model's B×C×H×W output in [0, 1] for ``inputs``, item i's noise from ``generators[i]``."""
        check_embeddings(inputs, self.model.cfg, self.family)
        dev = self.config.device
        return self.model.generate(
            inputs.tokens.to(dev),
            inputs.mask.to(dev),
            inputs.pooled.to(dev),
            generators,
            self.config.temperature,
            **self.sampling_options(),
        )


class SoundOutput:
    """Mixed in before a :class:`TrainedGenerator` (``class GANSoundGenerator(SoundOutput,
    GANGenerator)``): text embedding → sound from a trained folder of the same model, which
    predicts 1 × mels × frames log-mel "images" (``config.json`` records the layout as ``"mel"``, a
    :class:`.mel.MelImage`). Each item's spectrogram becomes a waveform by Griffin-Lim with a
    starting phase drawn from the item's own generator (after its noise), so the same seed gives
    the same clip alone or in a batch. A typed prompt is first completed as a Sounds caption."""

    output_type = Audio
    prompt_completion = "complete-sounds-prompt"

    def setup(self) -> None:
        super().setup()
        from .mel import MelCodec, MelImage

        if not getattr(self.model.cfg, "mel", None):
            raise WeightsError(
                f'{str(self.config.weights or self.default_weights)!r} holds no mel layout ("mel" in config.json)'
            )
        self.layout = MelImage.model_validate(self.model.cfg.mel)
        self.codec = MelCodec(self.layout.settings)

    def run(self, inputs: Embedding, generators: list) -> Audio:
        images = self.sample(inputs, generators)
        waves = self.layout.decode(images.float().cpu(), generators, self.codec)
        return Audio(waves, self.layout.settings.sample_rate)
