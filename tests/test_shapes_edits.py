"""The Shapes diffusion model edits and repaints (issue 33, part 4): given a request's image it
repaints the region the prompt changes (DiffEdit) or starts from the image's latents noised to
``strength`` (SDEdit), given a mask too it keeps the
unmasked latents on the image's path at every step and composites the result with the image, so
unmasked pixels stay exactly. Tiny random-weight folders stand in for the shipped model where
only the mechanics are tested; families that do not edit are refused by the chain check."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from fakes import random_embeddings, tiny_shapes_diffusion

from loom.core import Image, InputError


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny random-weight Shapes diffusion folder with an autoencoder (64×64 → 16×16×4)."""
    return tiny_shapes_diffusion(tmp_path_factory.mktemp("edits") / "shapes-diffusion")


embeddings = random_embeddings


def scenes(n=3, size=64, seed=0):
    """``n`` rendered Shapes scenes as an Image batch (whole 8-bit levels, as a PNG gives)."""
    from loom.plugins.shapes.world import render, sample_scene

    rng = np.random.default_rng(seed)
    arrays = [render(sample_scene(rng), size=size) for _ in range(n)]
    return Image(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255)


def cell_masks(n=3, size=64, cells=((0, 0), (1, 1), (2, 2))):
    """White (repaint) over one 3×3 grid cell per item."""
    masks = torch.zeros(n, 3, size, size)
    for i in range(n):
        row, col = cells[i % len(cells)]
        masks[i, :, row * size // 3 : (row + 1) * size // 3, col * size // 3 : (col + 1) * size // 3] = 1
    return Image(masks)


def component(folder, **options):
    from loom.plugins.diffusion import ShapesDiffusion

    step = ShapesDiffusion(weights=folder, steps=2, guidance_scale=1.0, **options)
    step.micro_batch = 3  # the tests' batches, padded to one shape as the shipped 8 are: faster on CPU
    return step


@pytest.mark.slow
@pytest.mark.parametrize("method", ["sdedit", "diffedit"])
def test_strength_one_draws_anew_and_zero_keeps_the_image(folder, method):
    emb, image = embeddings(), scenes()
    plain = component(folder)(emb, seed=[1, 2, 3]).pixels
    # strength 1 starts from pure noise: the image leaves no trace, text-to-image exactly
    assert torch.equal(component(folder, strength=1.0, edit=method)(emb, seed=[1, 2, 3], image=image).pixels, plain)
    # strength 0 leaves no step: the image's autoencoder round trip, whatever the seed
    model = component(folder).load().model
    with torch.no_grad():
        round_trip = model.unfold(model.fold(image.pixels)).clamp(0, 1)
    kept = component(folder, strength=0.0, edit=method)(emb, seed=[4, 5, 6], image=image).pixels
    assert (kept - round_trip).abs().max() < 1e-3  # float sums differ with the batch shape


def test_diffedit_finds_where_the_caption_moves_the_prediction_grown_by_a_latent(folder):
    from loom.plugins.diffusion.shapes import ShapesDiffusionModel

    model = ShapesDiffusionModel.from_folder(folder, "cpu")

    def prediction(latents, t, tokens, mask, pooled):
        # the empty condition (zero pooled vector) predicts nothing, the caption a bump on latents
        # rows 2-3, columns 5-6, and a smaller one (under the threshold) elsewhere
        out = torch.zeros_like(latents)
        captioned = pooled.abs().sum(1) > 0
        out[captioned, :, 2:4, 5:7] = 1.0
        out[captioned, :, 10, 10] = 0.2
        return out

    model.forward = prediction
    emb, image = embeddings(2), scenes(2)
    known = model.fold(image.pixels)
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    region = model.changed_region(known, emb.tokens, emb.mask, emb.pooled, 0.5, gens)
    expected = torch.zeros(2, 1, 64, 64)
    expected[:, :, 4:20, 16:32] = 1  # latents 1-4 × 4-7 (one latent of growth), 4 pixels each
    assert torch.equal(region, expected)


@pytest.mark.slow
def test_diffedit_repaints_the_region_it_finds_and_keeps_every_other_pixel(folder, monkeypatch):
    from loom.plugins.diffusion.shapes import ShapesDiffusionModel

    emb, image, cells = embeddings(), scenes(), cell_masks()
    asked = []

    def region(self, known, tokens, mask, pooled, level, generators):
        asked.append(level)
        return cells.pixels[: len(known), :1]

    monkeypatch.setattr(ShapesDiffusionModel, "changed_region", region)
    edit = component(folder, strength=0.5)
    out = edit(emb, seed=[1, 2, 3], image=image).pixels
    outside = cells.pixels == 0
    assert asked == [0.5] and torch.equal(out[outside], image.pixels[outside])
    assert (out - image.pixels)[~outside].abs().mean() > 0.01  # the region was redrawn
    # what is drawn there comes from the item's seed, the same alone as in a batch
    assert not torch.equal(edit(emb, seed=[7, 8, 9], image=image).pixels, out)
    alone = edit(emb.take([0]), seed=[1], image=image.take([0])).pixels[0]
    assert (alone - out[0]).abs().max() < 1e-4, float((alone - out[0]).abs().max())


@pytest.mark.slow
def test_sdedit_runs_the_last_steps_from_the_noised_image(folder):
    emb, image = embeddings(), scenes()
    plain = component(folder)(emb, seed=[1, 2, 3]).pixels
    model = component(folder).load().model
    with torch.no_grad():
        round_trip = model.unfold(model.fold(image.pixels)).clamp(0, 1)
    # the image and the seed both matter, and an item is the same alone and in a batch
    edit = component(folder, strength=0.5, edit="sdedit")
    batch = edit(emb, seed=[1, 2, 3], image=image).pixels
    assert not torch.equal(batch, plain) and not torch.allclose(batch, round_trip, atol=1e-3)
    assert not torch.equal(edit(emb, seed=[7, 8, 9], image=image).pixels, batch)
    alone = edit(emb.take([1]), seed=[2], image=image.take([1])).pixels[0]
    # known gap (issue 33): an edited item matches itself inside a batch to float rounding, not bit for bit
    assert (alone - batch[1]).abs().max() < 1e-4, float((alone - batch[1]).abs().max())


@pytest.mark.slow
def test_repainting_keeps_every_pixel_outside_the_mask(folder):
    emb, image, masks = embeddings(), scenes(), cell_masks()
    out = component(folder)(emb, seed=[1, 2, 3], image=image, mask=masks).pixels
    outside = masks.pixels == 0
    assert torch.equal(out[outside], image.pixels[outside])
    assert (out - image.pixels)[~outside].abs().mean() > 0.01  # the masked cell was repainted
    # an image of another size is resized to the model's 64×64 (antialiased) and so is its mask
    big, big_masks = scenes(size=128), cell_masks(size=128)
    out = component(folder)(emb, seed=[1, 2, 3], image=big, mask=big_masks).pixels
    assert out.shape == (3, 3, 64, 64)

    def small(pixels):
        return torch.nn.functional.interpolate(pixels, size=(64, 64), mode="bilinear", antialias=True).clamp(0, 1)

    outside = (small(big_masks.pixels) == 0).expand(-1, 3, -1, -1)
    assert outside.float().mean() > 0.8 and torch.equal(out[outside], small(big.pixels)[outside])


@pytest.mark.slow
def test_requests_the_model_cannot_serve_are_refused_naming_the_step(folder):
    emb, image, masks = embeddings(), scenes(), cell_masks()
    step = component(folder)
    with pytest.raises(InputError, match="^diffusion: a mask was given without an image"):
        step(emb, seed=0, mask=masks)
    with pytest.raises(InputError, match=r"^diffusion: the mask is 32×32 pixels but the image is 64×64"):
        step(emb, seed=0, image=image, mask=cell_masks(size=32))
    with pytest.raises(InputError, match="^diffusion: the image is not a batch of RGB images"):
        step(emb, seed=0, image=Image(torch.rand(3, 4, 64, 64)))
    with pytest.raises(InputError, match="takes image as Image of 3 item"):
        step(emb, seed=0, image=scenes(n=2))


def write_png(path, pixels):
    from PIL import Image as PILImage

    PILImage.fromarray((pixels.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)


@pytest.mark.parametrize("generator", ["vae", "gan", "ar"])
def test_families_that_do_not_edit_are_refused_before_anything_loads(tmp_path, generator):
    from loom.cli import main

    write_png(tmp_path / "in.png", scenes(n=1).pixels[0])
    out = tmp_path / "out.png"
    args = ["generate", "a red circle", "--generator", generator, "--image", str(tmp_path / "in.png"), "-o", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert "no step of this chain takes 'image'" in result.output
    result = CliRunner().invoke(main, [*args, "--strength", "0.6"])
    assert result.exit_code == 1 and "no step of this chain takes strength (steps: " in result.output
    assert generator in result.output
    assert not out.exists()


@pytest.mark.slow
def test_the_cli_repaints_a_cell_with_the_shipped_model_and_keeps_the_rest(tmp_path):
    from loom.cli import main

    image, masks = scenes(n=1), cell_masks(n=1, cells=((1, 1),))
    write_png(tmp_path / "in.png", image.pixels[0])
    write_png(tmp_path / "mask.png", masks.pixels[0])
    old = tmp_path / "out.png"
    args = [
        "generate",
        "a big green square in the middle",
        "--generator",
        "diffusion",
        "--image",
        str(tmp_path / "in.png"),
    ]
    args += ["--mask", str(tmp_path / "mask.png"), "--size", "64", "--seed", "3", "-o", str(old)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    from PIL import Image as PILImage

    with PILImage.open(old) as written:
        out = torch.from_numpy(np.asarray(written.convert("RGB")).copy()).permute(2, 0, 1).float() / 255
    outside = masks.pixels[0] == 0
    assert torch.equal(out[outside], image.pixels[0][outside])
