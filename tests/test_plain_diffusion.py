"""loom.plugins.diffusion.plain against diffusers: the same state dicts, bit-equal outputs, no diffusers import."""

import json
import os
import subprocess
import sys

import pytest
import torch
from fakes import TINY_AUTOENCODER

from loom.plugins.diffusion import plain

HEAVY = ("diffusers", "transformers", "sympy", "scipy")
#: What ShapesDiffusionModel gives UNet2DConditionModel for tests/fakes.py's tiny model (checked below).
TINY_UNET = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    block_out_channels=(32, 32),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    cross_attention_dim=384,
    attention_head_dim=8,
    norm_num_groups=32,
    class_embed_type="projection",
    projection_class_embeddings_input_dim=384,
)


def shapes_model(monkeypatch, build):
    """The ShapesDiffusionModel ``build()`` makes, and the keyword arguments it gave UNet2DConditionModel."""
    import diffusers

    seen, real = {}, diffusers.UNet2DConditionModel

    def recording(**kwargs):
        seen.update(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(diffusers, "UNet2DConditionModel", recording)
    return build(), seen


def tiny_model(monkeypatch):
    from loom.plugins.diffusion.shapes import ShapesDiffusionConfig, ShapesDiffusionModel

    torch.manual_seed(0)
    cfg = ShapesDiffusionConfig(block_out_channels=[32, 32], attention_head_dim=8, autoencoder=TINY_AUTOENCODER)
    return shapes_model(monkeypatch, lambda: ShapesDiffusionModel(cfg).eval())


def same_state(reference: torch.nn.Module, module: torch.nn.Module) -> None:
    """``module`` has ``reference``'s tensor names (in order) and shapes, and then its values."""
    ours, theirs = module.state_dict(), reference.state_dict()
    assert list(ours) == list(theirs)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    module.load_state_dict(theirs, strict=True)


def modes(reference: torch.nn.Module, module: torch.nn.Module):
    """Both modules in eval mode, then both in training mode (diffusers changes tensor layouts in training, and
    with them the convolutions' last bits)."""
    for training in (False, True):
        reference.train(training), module.train(training)
        yield training


def check_unet(reference, unet, channels: int, side: int) -> None:
    """Bit-equal predictions for a batch of 3 (timesteps as a tensor, an int, a float, a 0-d tensor), captions
    with padding masked out, and without a mask."""
    same_state(reference, unet)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, channels, side, side, generator=gen)
    tokens, pooled = torch.randn(3, 6, 384, generator=gen), torch.randn(3, 384, generator=gen)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]])
    with torch.no_grad():
        for training in modes(reference, unet):
            for t in (torch.tensor([3, 420, 999]), 500, 250.5, torch.tensor(77)):
                want = reference(x, t, encoder_hidden_states=tokens, encoder_attention_mask=mask, class_labels=pooled)
                got = unet(x, t, tokens, encoder_attention_mask=mask, class_labels=pooled)
                assert got.sample.shape == want.sample.shape and want.sample.abs().max() > 0
                assert torch.equal(got.sample, want.sample), (training, t, (got.sample - want.sample).abs().max())
            unmasked = unet(x, t, tokens, class_labels=pooled).sample
            assert torch.equal(unmasked, reference(x, t, encoder_hidden_states=tokens, class_labels=pooled).sample)
    # the mask reaches the cross-attention: the padded items change without it, the unpadded one (almost) does not
    assert torch.allclose(unmasked[0], got.sample[0], atol=1e-5)
    assert (unmasked[1:] - got.sample[1:]).flatten(1).abs().amax(dim=1).min() > 1e-3


def check_autoencoder(reference, autoencoder, side: int, batch: int = 2) -> None:
    """Bit-equal posteriors (mean, log-variance, mode, KL) and decoded images."""
    same_state(reference, autoencoder)
    gen = torch.Generator().manual_seed(2)
    images = torch.rand(batch, 3, side, side, generator=gen) * 2 - 1
    with torch.no_grad():
        for training in modes(reference, autoencoder):
            want, got = reference.encode(images).latent_dist, autoencoder.encode(images).latent_dist
            for name in ("mean", "logvar", "std"):
                assert torch.equal(getattr(got, name), getattr(want, name)), (training, name)
            assert torch.equal(got.mode(), want.mode()) and torch.equal(got.kl(), want.kl())
            latents = torch.randn(got.mean.shape, generator=gen)
            decoded = autoencoder.decode(latents).sample
            assert decoded.shape == images.shape
            assert torch.equal(decoded, reference.decode(latents).sample), training


@pytest.mark.slow  # imports diffusers: about 4.5 s
def test_tiny_shapes_model_is_bit_equal(monkeypatch):
    model, kwargs = tiny_model(monkeypatch)
    assert kwargs == TINY_UNET  # the tiny config the other tests here use is Loom's
    unet = plain.plain_unet(**kwargs)
    check_unet(model.unet, unet, model.cfg.channels, model.cfg.latent_size)
    check_unet(model.unet, unet, model.cfg.channels, 15)  # an odd side: upsampling to the skip's size
    check_autoencoder(model.vae, plain.plain_autoencoder(model.cfg.autoencoder), model.cfg.image_size)


@pytest.mark.parametrize(
    "changes",
    [
        # three levels, two resnets each, narrow groups and several heads per transformer
        dict(
            block_out_channels=(16, 32, 48),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            layers_per_block=2,
            norm_num_groups=4,
            attention_head_dim=4,
            in_channels=3,
            out_channels=5,
        ),
        # one level: no up- or downsampling, attention in the mid block only
        dict(
            block_out_channels=(16,),
            down_block_types=("DownBlock2D",),
            up_block_types=("UpBlock2D",),
            norm_num_groups=8,
        ),
    ],
)
def test_other_shapes_unets_are_bit_equal(changes):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    kwargs = {**TINY_UNET, **changes}
    check_unet(UNet2DConditionModel(**kwargs), plain.plain_unet(**kwargs), kwargs["in_channels"], 12)


def test_autoencoder_with_wider_levels_is_bit_equal():
    from loom.plugins.diffusion.shapes import build_autoencoder

    torch.manual_seed(0)
    spec = {"block_out_channels": [8, 16, 24], "latent_channels": 3, "layers_per_block": 2}
    # a batch of 64: diffusers' upsampling makes its input contiguous from there on
    check_autoencoder(build_autoencoder(spec), plain.plain_autoencoder(spec), 32, batch=64)


@pytest.mark.slow
def test_shipped_model_is_bit_equal(monkeypatch):
    from loom.plugins.diffusion import ShapesDiffusion
    from loom.plugins.diffusion.shapes import ShapesDiffusionModel

    model, kwargs = shapes_model(monkeypatch, lambda: ShapesDiffusionModel.from_folder(ShapesDiffusion.default_weights))
    check_unet(model.unet, plain.plain_unet(**kwargs), model.cfg.channels, model.cfg.latent_size)
    check_autoencoder(model.vae, plain.plain_autoencoder(model.cfg.autoencoder), model.cfg.image_size)


@pytest.mark.slow  # a fresh interpreter: importing torch alone takes about 2 s
def test_importing_and_running_it_leaves_diffusers_out():
    code = f"""
import json, sys, torch
from loom.plugins.diffusion import plain
unet = plain.plain_unet(**{TINY_UNET!r})
out = unet(torch.randn(2, 4, 16, 16), 10, torch.randn(2, 6, 384), torch.ones(2, 6), torch.randn(2, 384)).sample
ae = plain.plain_autoencoder({TINY_AUTOENCODER!r})
image = ae.decode(ae.encode(torch.rand(1, 3, 32, 32)).latent_dist.mode()).sample
print(json.dumps([list(out.shape), list(image.shape), sorted(m for m in {HEAVY!r} if m in sys.modules)]))
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.splitlines()[-1]) == [[2, 4, 16, 16], [1, 3, 32, 32], []]


@pytest.mark.parametrize(
    "changes, named",
    [
        (dict(down_block_types=("AttnDownBlock2D", "CrossAttnDownBlock2D")), "AttnDownBlock2D"),
        (dict(up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D")), "up_block_types"),
        (dict(mid_block_type="UNetMidBlock2DSimpleCrossAttn"), "UNetMidBlock2DSimpleCrossAttn"),
        (dict(class_embed_type="timestep"), "timestep"),
        (dict(use_linear_projection=True), "use_linear_projection"),
        (dict(attention_head_dim=(8, 8)), "attention_head_dim"),
        (dict(block_out_channels=(32, 32.0)), "block_out_channels"),
    ],
)
def test_unsupported_unets_are_refused_by_name(changes, named):
    with pytest.raises(ValueError, match=named):
        plain.plain_unet(**{**TINY_UNET, **changes})
