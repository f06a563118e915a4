"""Conditional VAE generator: text embedding → image.

The default weights ship in ``weights/`` (config.json + model.safetensors), trained by
``loom train vae`` on the procedural Shapes world; ``weights/TRAINING.md`` holds the command and
seed that made them. This module imports no torch: the network lives in :mod:`.model` and loads
on first use.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field, field_validator

from loom.core import ComponentConfig, Embedding, Generator, Image, InputError, WeightsError, hookimpl

DEFAULT_WEIGHTS = Path(__file__).parent / "weights"


def check_folder(folder: "str | Path", family: str = "vae") -> Path:
    """``folder`` if it holds a trained model of ``family``; otherwise a WeightsError saying what is missing."""
    folder = Path(folder)
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise WeightsError(
            f"{str(folder)!r} is not a trained {family} folder: it needs config.json and model.safetensors "
            f"(train one with `loom train {family} --out {folder}`)"
        )
    found = json.loads((folder / "config.json").read_text()).get("family")
    if found != family:
        raise WeightsError(f"{str(folder)!r} holds a {found!r} model, not a {family!r} one")
    return folder


class VAEGenerator(Generator):
    """Samples images from a conditional VAE given text embeddings."""

    description = "text embedding → 64×64 image (conditional VAE trained on Shapes)"

    class Config(ComponentConfig):
        weights: str | None = Field(None, description="trained folder; None for the shipped default")
        temperature: float = Field(1.0, ge=0.0, le=3.0, description="scale of the latent noise")
        device: str = "cpu"

        @field_validator("weights")
        @classmethod
        def _folder_exists(cls, value):
            if value is not None:
                check_folder(value)
            return value

    input_type = Embedding
    output_type = Image

    def setup(self) -> None:
        from . import model

        folder = check_folder(self.config.weights or DEFAULT_WEIGHTS)
        self.model = model.load(folder, self.config.device)

    def run(self, inputs: Embedding, generators: list) -> Image:
        import torch

        cfg = self.model.cfg
        if inputs.encoder != cfg.encoder:
            raise InputError(
                f"this VAE was trained on embeddings from {cfg.encoder!r}, got embeddings from {inputs.encoder!r}; "
                f"use the text-encoder step with model: {cfg.encoder}"
            )
        if inputs.pooled is None or inputs.tokens.shape[-1] != cfg.text_dim:
            raise InputError(f"this VAE needs {cfg.text_dim}-wide token embeddings with a pooled vector")
        noise = torch.stack([torch.randn(cfg.latent_dim, generator=g) for g in generators])
        dev = self.config.device
        pixels = self.model.sample(
            inputs.tokens.to(dev), inputs.mask.to(dev), inputs.pooled.to(dev), noise.to(dev), self.config.temperature
        )
        return Image(pixels.float().cpu())


@hookimpl
def loom_register_components(register):
    register("vae", VAEGenerator)
