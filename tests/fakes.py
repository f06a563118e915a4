"""Small torch components for testing the engine without real models."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from pydantic import Field

from loom.core import (
    Audio,
    ComponentConfig,
    Embedding,
    Encoder,
    Generator,
    Image,
    Postprocessor,
    Registry,
    Text,
    hookimpl,
)

#: Every setup() call, by class name: tests check that building a chain loads nothing.
LOADED: list[str] = []


class HashEncoder(Encoder):
    class Config(ComponentConfig):
        dim: int = Field(8, ge=1, le=64)

    input_type = Text
    output_type = Embedding

    def setup(self):
        LOADED.append(type(self).__name__)

    def run(self, inputs, generators):
        import torch

        rows = [[(hash(s) >> (4 * j)) % 7 / 7.0 for j in range(self.config.dim)] for s in inputs.items]
        tokens = torch.tensor(rows).unsqueeze(1)
        return Embedding(tokens=tokens, mask=torch.ones(len(rows), 1), encoder="hash", pooled=tokens[:, 0])


class NoiseGenerator(Generator):
    class Config(ComponentConfig):
        size: int = Field(8, ge=2, le=64)

    input_type = Embedding
    output_type = Image

    def setup(self):
        LOADED.append(type(self).__name__)

    def run(self, inputs, generators):
        import torch

        s = self.config.size
        noise = torch.stack([torch.rand(3, s, s, generator=g) for g in generators])
        # A batch-wide matmul, as a real network has, so micro-batching matters.
        mix = inputs.pooled @ torch.ones(inputs.pooled.shape[1], 3 * s * s) / inputs.pooled.shape[1]
        return Image(((noise + mix.view(-1, 3, s, s)) / 2).clamp(0, 1))


class Invert(Postprocessor):
    input_type = Image
    output_type = Image

    def run(self, inputs, generators):
        return Image(1 - inputs.pixels)


class Quieter(Postprocessor):
    input_type = Audio
    output_type = Audio

    def run(self, inputs, generators):
        return Audio(inputs.waveforms * 0.5, inputs.sample_rate)


def fake_plugin():
    @hookimpl
    def loom_register_components(register):
        register("hash-encoder", HashEncoder)
        register("noise", NoiseGenerator)
        register("invert", Invert)
        register("quieter", Quieter)

    return SimpleNamespace(loom_register_components=loom_register_components, __name__="fakes")


def fake_registry() -> Registry:
    registry = Registry()
    registry.add_plugin(fake_plugin(), "fakes", "fakes-dist", "1.0")
    return registry


def ctrl_c_at(stop_step: int):
    """An ``on_step`` for ``loom.train`` that sends the process what Ctrl-C sends (SIGINT) after
    step ``stop_step``: the run stops after that step and saves its checkpoint."""
    import os
    import signal

    def on_step(step, losses):
        if step == stop_step:
            os.kill(os.getpid(), signal.SIGINT)

    return on_step


#: A tiny autoencoder for Shapes diffusion folders of the edit, LoRA and adapter tests (64×64 → 16×16×4).
TINY_AUTOENCODER = {"block_out_channels": [8, 8, 8], "latent_channels": 4, "shift": 0.1, "scale": 2.0}


def captioned_renders(folder, n: int = 4) -> str:
    """``n`` Shapes renders with a same-name .txt caption each in ``folder``, as a user's folder (seed 0)."""
    import numpy as np
    from PIL import Image

    from loom.plugins.shapes.world import caption, render, sample_scene

    rng = np.random.default_rng(0)
    for i in range(n):
        scene = sample_scene(rng)
        Image.fromarray(render(scene, 64)).save(Path(folder) / f"{i}.png")
        (Path(folder) / f"{i}.txt").write_text(caption(scene, rng))
    return str(folder)


def tiny_shapes_diffusion(folder) -> str:
    """A random-weight Shapes diffusion folder with :data:`TINY_AUTOENCODER`, saved in ``folder`` (seed 0)."""
    import torch

    from loom.plugins.diffusion import shapes

    torch.manual_seed(0)
    cfg = shapes.ShapesDiffusionConfig(block_out_channels=[32, 32], attention_head_dim=8, autoencoder=TINY_AUTOENCODER)
    return str(shapes.ShapesDiffusionModel(cfg).save(folder))


def random_embeddings(n: int = 3):
    """``n`` random caption embeddings shaped like the text encoder's (6 tokens of 384)."""
    import torch

    from loom.core import Embedding

    gen = torch.Generator().manual_seed(0)
    return Embedding(
        tokens=torch.randn(n, 6, 384, generator=gen),
        mask=torch.ones(n, 6),
        encoder="all-MiniLM-L6-v2",
        pooled=torch.randn(n, 384, generator=gen),
    )


def as_distilled(shapes: str) -> str:
    """A copy of the Shapes diffusion folder ``shapes`` as a ``diffusion-fast`` one (beside it, "-fast")."""
    import json
    import shutil

    fast = shutil.copytree(shapes, f"{shapes}-fast", dirs_exist_ok=True)
    config = json.loads((Path(fast) / "config.json").read_text())
    (Path(fast) / "config.json").write_text(json.dumps({**config, "family": "diffusion-fast"}))
    return str(fast)


def diffusion_kit_configs(model: str, shapes: str, controlnet: str, **fast) -> dict:
    """The configs the conformance kit checks the diffusion plugin's steps with: a tiny SD folder ``model``
    (``fast``: few steps, small size), a Shapes diffusion folder (as ``diffusion`` and, copied,
    ``diffusion-fast``) and a ControlNet folder."""
    quick = {"model": model, **fast}
    return {
        "stable-diffusion": quick,
        "sd-text-encoder": {"model": model},
        "sd-denoiser": quick,
        "sd-vae-decode": {"model": model},
        "sd-vae-encode": {"model": model},
        "diffusion": {"weights": shapes, "steps": 2},
        "diffusion-fast": {"weights": as_distilled(shapes), "steps": 2},
        "sd-controlnet": {**quick, "controlnet": controlnet},
    }
