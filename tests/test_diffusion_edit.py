"""Image-to-image and inpainting through Loom's diffusers steps (issue 33, part 3): on tiny
random-weight pipeline folders (SD-1.x- and SDXL-shaped, with 4-channel and 9-channel inpainting
UNets), ``stable-diffusion`` given an image (and a soft-edged mask) equals diffusers'
StableDiffusionImg2ImgPipeline / StableDiffusionInpaintPipeline (and the SDXL ones) to ≤ 1e-4 at
strengths 0.0, 0.3 and 1.0 with two schedulers; an item is the same alone and in a batch; the
three typed steps equal the one step; ``sd-vae-encode`` gives the latents diffusers starts from;
requests a folder cannot serve are refused in one line naming what to do."""

import pytest
import torch

from loom.core import Image, InputError, Latent, Text
from loom.core.seeding import generators
from loom.plugins.diffusion import SCHEDULERS, SDDenoiser, SDTextEncoder, SDVAEDecode, SDVAEEncode, StableDiffusion

PROMPTS = ["a red circle on a blue background", "a photo of a cat"]
SEEDS = [7, 8]
STEPS = 4  # strength 0.3 leaves int(4 × 0.3) = 1 step, 1.0 all 4, 0.0 none
STRENGTHS = [0.0, 0.3, 1.0]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """The tiny folders, built once: sd, sd-inpaint (9 channels), xl, xl-inpaint (9 channels)."""
    from loom.plugins.diffusion.tiny import build_tiny_inpaint_pipeline, build_tiny_pipeline, build_tiny_xl_pipeline

    root = tmp_path_factory.mktemp("tiny-edit")
    build_tiny_pipeline(root / "sd")
    build_tiny_inpaint_pipeline(root / "sd-inpaint")
    build_tiny_xl_pipeline(root / "xl")
    build_tiny_inpaint_pipeline(root / "xl-inpaint", xl=True)
    return {name: str(root / name) for name in ("sd", "sd-inpaint", "xl", "xl-inpaint")}


def pictures(count=2, size=32, seed=0):
    """``count`` images in [0, 1] made of whole 8-bit levels (what a PNG gives), smooth enough to look like one."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, size // 4, size // 4, generator=g)
    px = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")
    return (px * 255).round() / 255


def soft_masks(count=2, size=32):
    """Masks with soft edges (white = repaint), one per item: a ramp across the image, then a disc
    whose edge fades over 6 pixels; every value a whole 8-bit level, many near 0.5."""
    y, x = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    ramp = ((x - size / 4) / (size / 2)).clamp(0, 1)
    disc = ((size / 3 - ((x - size / 2) ** 2 + (y - size / 2) ** 2).sqrt()) / 6 + 0.5).clamp(0, 1)
    masks = torch.stack([ramp, disc] * count)[:count]
    return (masks * 255).round()[:, None].expand(-1, 3, -1, -1) / 255


_peers: dict = {}


def peer_pipeline(cls_name, folder, scheduler):
    """diffusers' own pipeline ``cls_name`` on ``folder`` (loaded once), with ``scheduler``."""
    import diffusers

    key = (cls_name, folder)
    if key not in _peers:
        pipe = getattr(diffusers, cls_name).from_pretrained(folder)
        pipe.set_progress_bar_config(disable=True)
        _peers[key] = (pipe, pipe.scheduler.config)
    pipe, config = _peers[key]
    sched_cls, options = SCHEDULERS[scheduler]
    pipe.scheduler = getattr(diffusers, sched_cls).from_config(config, **options)
    return pipe


def peer_round_trip(pipe, image, seeds):
    """What no denoising step leaves (diffusers raises there): the image's latents, sampled with
    each item's generator as its pipelines do, decoded by its VAE (diffusers' parts only)."""
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img import retrieve_latents

    x = pipe.image_processor.preprocess(image)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    with torch.no_grad():
        z = torch.cat([retrieve_latents(pipe.vae.encode(x[i : i + 1]), generator=g) for i, g in enumerate(gens)])
        out = pipe.vae.decode(z, return_dict=False)[0]  # scaling_factor in, then out: z * sf / sf
    return pipe.image_processor.postprocess(out, output_type="pt")


def peer(cls_name, folder, scheduler, strength, image, mask=None, guidance_scale=5.0):
    pipe = peer_pipeline(cls_name, folder, scheduler)
    if int(STEPS * strength) == 0:
        return peer_round_trip(pipe, image, SEEDS)
    extra = {} if mask is None else {"mask_image": mask[:, :1], "height": image.shape[-2], "width": image.shape[-1]}
    return pipe(
        PROMPTS,
        image=image,
        strength=strength,
        num_inference_steps=STEPS,
        guidance_scale=guidance_scale,
        generator=[torch.Generator().manual_seed(s) for s in SEEDS],
        output_type="pt",
        **extra,
    ).images


def loom_edit(folder, scheduler, strength, image, mask=None, guidance_scale=5.0):
    """``stable-diffusion`` called as the engine calls it: load(), then run() with the given inputs."""
    step = StableDiffusion(
        model=folder, scheduler=scheduler, steps=STEPS, strength=strength, guidance_scale=guidance_scale
    ).load()
    given = {"image": Image(image)} if mask is None else {"image": Image(image), "mask": Image(mask)}
    return step.run(Text(PROMPTS), generators(SEEDS), **given).pixels


CASES = {
    "sd-img2img": ("sd", "StableDiffusionImg2ImgPipeline", False),
    "sd-inpaint": ("sd-inpaint", "StableDiffusionInpaintPipeline", True),
    "xl-img2img": ("xl", "StableDiffusionXLImg2ImgPipeline", False),
    "xl-inpaint": ("xl-inpaint", "StableDiffusionXLInpaintPipeline", True),
}


@pytest.mark.slow
@pytest.mark.parametrize("strength", STRENGTHS)
@pytest.mark.parametrize("scheduler", ["ddim", "euler"])
@pytest.mark.parametrize("case", list(CASES))
def test_loom_equals_diffusers(folders, case, scheduler, strength):
    name, cls_name, inpaint = CASES[case]
    image, mask = pictures(), soft_masks() if inpaint else None
    ours = loom_edit(folders[name], scheduler, strength, image, mask)
    theirs = peer(cls_name, folders[name], scheduler, strength, image, mask).float()
    assert ours.shape == theirs.shape == (2, 3, 32, 32)
    assert (ours - theirs).abs().max() <= 1e-4
    assert ours.std() > 0.01


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["ddim", "euler"])
def test_a_mask_on_a_text_to_image_unet_is_diffusers_blended_inpainting(folders, scheduler):
    # a 4-channel UNet inpaints the way diffusers' inpainting pipeline does with one: each step
    # puts the noised image back outside the mask
    image, mask = pictures(), soft_masks()
    ours = loom_edit(folders["sd"], scheduler, 0.3, image, mask)
    theirs = peer("StableDiffusionInpaintPipeline", folders["sd"], scheduler, 0.3, image, mask).float()
    assert (ours - theirs).abs().max() <= 1e-4
    plain = loom_edit(folders["sd"], scheduler, 0.3, image)
    assert (ours - plain).abs().max() > 1e-3  # the mask changed something


@pytest.mark.slow
@pytest.mark.parametrize("batch_size", [1, 3])
def test_an_edited_item_is_the_same_alone_and_in_a_batch(folders, batch_size):
    step = StableDiffusion(model=folders["sd-inpaint"], steps=STEPS, strength=0.6, batch_size=batch_size)
    image, mask = pictures(3, seed=1), soft_masks(3)
    batch = step(Text(["x", PROMPTS[0], "y"]), seed=[4, 9, 5], image=Image(image), mask=Image(mask))
    alone = step(Text([PROMPTS[0]]), seed=[9], image=Image(image[1:2]), mask=Image(mask[1:2]))
    if batch_size == 1:  # each item runs alone: the very same arithmetic
        assert torch.equal(batch.pixels[1], alone.pixels[0])
    else:  # a 3-item chunk on CPU: an item's place in it moves float32 sums by ~1e-6 (text-to-image too)
        assert (batch.pixels[1] - alone.pixels[0]).abs().max() <= 1e-5
    other = step(Text([PROMPTS[0]]), seed=[10], image=Image(image[1:2]), mask=Image(mask[1:2]))
    assert (other.pixels - alone.pixels).abs().max() > 1e-3  # the item's seed is what it draws from


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sd-inpaint", "xl"])
def test_three_typed_steps_equal_the_one_step_on_an_image(folders, name):
    folder = folders[name]
    sampling = {"model": folder, "scheduler": "euler", "steps": STEPS, "strength": 0.6, "guidance_scale": 4.0}
    image = Image(pictures())
    given = {"image": image, "mask": Image(soft_masks())} if name.endswith("inpaint") else {"image": image}
    one = StableDiffusion(**sampling, negative_prompt="blurry")(Text(PROMPTS), seed=3, **given)
    emb = SDTextEncoder(model=folder, negative_prompt="blurry")(Text(PROMPTS), seed=0)
    latents = SDDenoiser(**sampling)(emb, seed=3, **given)
    assert latents.tensor.shape == (2, 4, 16, 16) and latents.space == f"diffusers:{folder}"
    three = SDVAEDecode(model=folder)(latents, seed=0)
    assert (one.pixels - three.pixels).abs().max() <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sd", "xl"])
def test_vae_encode_gives_the_latents_diffusers_starts_from(folders, name):
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img import retrieve_latents

    images = Image(pictures())
    encoder = SDVAEEncode(model=folders[name])
    latents = encoder(images, seed=SEEDS)
    assert isinstance(latents, Latent) and latents.tensor.dtype == torch.float32
    assert latents.tensor.shape == (2, 4, 16, 16) and latents.space == f"diffusers:{folders[name]}"
    vae = peer_pipeline("StableDiffusionImg2ImgPipeline", folders["sd"], "ddim").vae  # the same VAE weights
    x = pictures() * 2 - 1
    with torch.no_grad():
        theirs = [
            retrieve_latents(vae.encode(x[i : i + 1]), generator=torch.Generator().manual_seed(s))
            for i, s in enumerate(SEEDS)
        ]
    assert (latents.tensor - torch.cat(theirs) * vae.config.scaling_factor).abs().max() <= 1e-5
    assert not torch.equal(encoder(images, seed=[1, 2]).tensor, latents.tensor)  # seeded per item
    mode = SDVAEEncode(model=folders[name], latent="mode")
    assert torch.equal(mode(images, seed=1).tensor, mode(images, seed=2).tensor)  # the mode draws nothing
    back = SDVAEDecode(model=folders[name])(latents, seed=0)
    assert back.pixels.shape == (2, 3, 32, 32) and back.pixels.dtype == torch.float32
    # sides are rounded down to the VAE's factor (2 for the tiny VAE, 8 for SD's)
    odd = encoder(Image(pictures(1, size=36)[..., :33, :35]), seed=0)
    assert odd.tensor.shape == (1, 4, 16, 17)


@pytest.mark.slow
def test_an_image_of_another_size_is_resized_to_the_size_asked_for(folders):
    image = Image(pictures(1, size=48)[..., :45, :])  # 48×45: 45 rounds down to 44
    step = StableDiffusion(model=folders["sd"], steps=2, strength=0.5)
    assert step(Text(PROMPTS[:1]), seed=0, image=image).pixels.shape == (1, 3, 44, 48)
    sized = StableDiffusion(model=folders["sd"], steps=2, strength=0.5, width=32, height=24)
    assert sized(Text(PROMPTS[:1]), seed=0, image=image).pixels.shape == (1, 3, 24, 32)


@pytest.mark.slow
def test_requests_a_folder_cannot_serve_are_refused_in_one_line(folders, tmp_path):
    import shutil

    from loom.plugins.diffusion.tiny import _tiny_unet

    image, mask = Image(pictures(1)), Image(soft_masks(1))
    sd = StableDiffusion(model=folders["sd"], steps=2)
    with pytest.raises(InputError) as err:
        sd(Text(PROMPTS[:1]), seed=0, mask=mask)
    assert (
        str(err.value)
        == "stable-diffusion: a mask was given without an image: give the image it marks too (image=…, or --image)"
    )
    with pytest.raises(InputError, match=r"the mask is 24×32 pixels but the image is 32×32: give a mask of the image"):
        sd(Text(PROMPTS[:1]), seed=0, image=image, mask=Image(soft_masks(1)[..., :24]))
    inpainter = folders["sd-inpaint"]
    for given in ({}, {"image": image}):  # an inpainting model needs both
        with pytest.raises(InputError) as err:
            StableDiffusion(model=inpainter, steps=2)(Text(PROMPTS[:1]), seed=0, **given)
        assert str(err.value) == (
            f"stable-diffusion: {inpainter!r} holds an inpainting model (its UNet takes 9 channels): give an image "
            "and a mask (white = repaint)"
        )
    with pytest.raises(InputError, match="^sd-denoiser: .* holds an inpainting model"):
        emb = SDTextEncoder(model=inpainter)(Text(PROMPTS[:1]), seed=0)
        SDDenoiser(model=inpainter, steps=2)(emb, seed=0, image=image)
    # a UNet of another kind (5 channels, as a depth-to-image model's) edits nothing
    other = tmp_path / "five"
    shutil.copytree(folders["sd"], other)
    _tiny_unet(5, sample_size=32, cross_attention_dim=32, attention_head_dim=8).save_pretrained(other / "unet")
    with pytest.raises(InputError) as err:
        StableDiffusion(model=str(other), steps=2)(Text(PROMPTS[:1]), seed=0, image=image, mask=mask)
    assert f"the UNet in {str(other)!r} takes 5 input channels" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(InputError, match="the image is 1×1 pixels, smaller than the 2-pixel blocks"):
        sd(Text(PROMPTS[:1]), seed=0, image=Image(torch.rand(1, 3, 1, 1)))
