"""``sd-controlnet`` (issue 33, part 6): a diffusers Stable Diffusion folder steered by a ControlNet
through a request's ``control`` image. On tiny random-weight folders (the session's SD-1.x-shaped
``tiny_sd``, an SDXL-shaped one, and ControlNets made from their UNets with the zero-initialised
convolutions drawn at random, so that the control changes the image), Loom's public API gives
what diffusers' StableDiffusionControlNetPipeline (and the SDXL one) gives to ≤ 1e-4 at
conditioning scales 0, 0.5 and 1 with two schedulers; an item is the same alone and in a batch;
a request without a control is refused before anything loads; a folder that is not a
ControlNetModel, or one made for another model, is refused in one line naming it."""

import hashlib
import json
from pathlib import Path

import pytest
import torch

import loom
from loom.core import ConfigError, Image, InputError, Text, WeightsError
from loom.plugins.diffusion import SCHEDULERS, SDControlNet, StableDiffusion
from loom.plugins.diffusion.tiny import build_tiny_controlnet

PROMPTS = ["a red circle on a blue background", "a photo of a cat"]
SEEDS = [7, 8]
STEPS = 3
SCALES = [0.0, 0.5, 1.0]


@pytest.fixture(scope="module")
def folders(tiny_sd, tmp_path_factory):
    """sd (the session's tiny folder) and sd-cn, its ControlNet, built once."""
    root = tmp_path_factory.mktemp("tiny-controlnet")
    return {"sd": tiny_sd[0], "sd-cn": build_tiny_controlnet(tiny_sd[0], root / "sd-cn")}


@pytest.fixture(scope="module")
def xl_folders(folders, tmp_path_factory):
    """The SD folders plus xl (a tiny SDXL-shaped folder) and xl-cn, its ControlNet, built once."""
    from loom.plugins.diffusion.tiny import build_tiny_xl_pipeline

    root = tmp_path_factory.mktemp("tiny-controlnet-xl")
    build_tiny_xl_pipeline(root / "xl")
    return {**folders, "xl": str(root / "xl"), "xl-cn": build_tiny_controlnet(root / "xl", root / "xl-cn")}


def pictures(count=2, size=32, seed=0):
    """``count`` images in [0, 1] of whole 8-bit levels (what a PNG gives), smooth enough to look like one."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, size // 4, size // 4, generator=g)
    px = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")
    return (px * 255).round() / 255


_peers: dict = {}


def peer(folders, name, scheduler, scale, control, **size):
    """diffusers' own ControlNet pipeline on folder ``name`` and its ControlNet (loaded once), called directly."""
    import diffusers

    if name not in _peers:
        xl = name == "xl"
        cls = diffusers.StableDiffusionXLControlNetPipeline if xl else diffusers.StableDiffusionControlNetPipeline
        net = diffusers.ControlNetModel.from_pretrained(folders[f"{name}-cn"])
        pipe = cls.from_pretrained(folders[name], controlnet=net)
        pipe.set_progress_bar_config(disable=True)
        _peers[name] = (pipe, pipe.scheduler)
    pipe, own = _peers[name]
    sched_cls, extra = SCHEDULERS[scheduler]  # "default": a fresh copy of the folder's own
    pipe.scheduler = (getattr(diffusers, sched_cls) if sched_cls else type(own)).from_config(own.config, **extra)
    return pipe(
        PROMPTS,
        image=control,
        num_inference_steps=STEPS,
        guidance_scale=5.0,
        controlnet_conditioning_scale=scale,
        generator=[torch.Generator().manual_seed(s) for s in SEEDS],
        output_type="pt",
        **size,
    ).images.float()


def options(folders, name="sd", **extra) -> dict:
    return {"model": folders[name], "controlnet": folders[f"{name}-cn"], "steps": STEPS, "guidance_scale": 5.0, **extra}


def loom_run(folders, name="sd", control=None, prompts=PROMPTS, seeds=SEEDS, **extra):
    """``sd-controlnet`` through Loom's public API, a one-step chain run on ``prompts`` with ``control``:
    (the result, the pipeline)."""
    pipeline = loom.Pipeline.from_steps(("sd-controlnet", options(folders, name, **extra)))
    control = Image(pictures() if control is None else control)
    return pipeline.run(prompts, seed=seeds, control=control, progress=False), pipeline


@pytest.mark.slow
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("scheduler", ["default", "euler-ancestral"])
def test_loom_equals_diffusers(folders, scheduler, scale):
    control = pictures(seed=1)
    # batch_size 2: both items in one call, as diffusers runs them
    result, _ = loom_run(folders, control=control, scheduler=scheduler, conditioning_scale=scale, batch_size=2)
    ours, theirs = result.output.pixels, peer(folders, "sd", scheduler, scale, control)
    assert ours.shape == theirs.shape == (2, 3, 32, 32)
    assert (ours - theirs).abs().max() <= 1e-4
    assert ours.std() > 0.01


@pytest.mark.slow
def test_loom_equals_diffusers_on_sdxl(xl_folders):
    control = pictures(seed=1)
    result, _ = loom_run(xl_folders, "xl", control=control, conditioning_scale=0.5, batch_size=2)
    ours, theirs = result.output.pixels, peer(xl_folders, "xl", "default", 0.5, control)
    assert ours.shape == theirs.shape == (2, 3, 32, 32)
    assert (ours - theirs).abs().max() <= 1e-4


@pytest.mark.slow
def test_the_control_steers_the_image_and_scale_0_is_plain_text_to_image(folders):
    one, other = Image(pictures(seed=1)), Image(pictures(seed=2))
    step = SDControlNet(**options(folders, guidance_scale=1.0, batch_size=2))
    steered = step(Text(PROMPTS), seed=SEEDS, control=one).pixels
    assert (step(Text(PROMPTS), seed=SEEDS, control=other).pixels - steered).abs().max() > 1e-2
    off = SDControlNet(**options(folders, guidance_scale=1.0, batch_size=2, conditioning_scale=0.0))
    unsteered = off(Text(PROMPTS), seed=SEEDS, control=one).pixels
    assert (unsteered - steered).abs().max() > 1e-2
    assert torch.equal(off(Text(PROMPTS), seed=SEEDS, control=other).pixels, unsteered)
    # at scale 0 the ControlNet adds zeros: the folder's own text-to-image image
    plain = StableDiffusion(model=folders["sd"], steps=STEPS, guidance_scale=1.0, width=32, height=32, batch_size=2)
    assert (plain(Text(PROMPTS), seed=SEEDS).pixels - unsteered).abs().max() <= 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("batch_size", [1, 2])
def test_an_item_is_the_same_alone_and_in_a_batch(folders, batch_size):
    step = SDControlNet(**options(folders, batch_size=batch_size, steps=2))
    controls = pictures(3, seed=3)
    batch = step(Text(["x", PROMPTS[0], "y"]), seed=[4, 9, 5], control=Image(controls))
    alone = step(Text([PROMPTS[0]]), seed=[9], control=Image(controls[1:2]))
    if batch_size == 1:  # each item runs alone: the very same arithmetic
        assert torch.equal(batch.pixels[1], alone.pixels[0])
        other = step(Text([PROMPTS[0]]), seed=[10], control=Image(controls[1:2]))
        assert (other.pixels - alone.pixels).abs().max() > 1e-3  # another seed, another image
    else:  # chunks of 2 on CPU: an item's place in one moves float32 sums by ~1e-6
        assert (batch.pixels[1] - alone.pixels[0]).abs().max() <= 1e-5


@pytest.mark.slow
def test_the_control_is_resized_as_diffusers_resizes_it(folders):
    control = pictures(2, size=48)
    sized, _ = loom_run(folders, control=control, width=32, height=24, batch_size=2)
    assert sized.output.pixels.shape == (2, 3, 24, 32)
    theirs = peer(folders, "sd", "default", 1.0, control, width=32, height=24)
    assert (sized.output.pixels - theirs).abs().max() <= 1e-4
    odd, _ = loom_run(folders, control=control[:1, :, :45, :35], prompts=PROMPTS[:1], seeds=[1], steps=1)
    assert odd.output.pixels.shape == (1, 3, 44, 34)  # the control's size, each side rounded down to the VAE's 2


@pytest.mark.slow
def test_the_record_keeps_the_controlnet_digests_and_its_weights_read_back(folders, tmp_path):
    result, pipeline = loom_run(folders, batch_size=2)
    kept = result.provenance["components"][0]["weights"]
    files = sorted(p for p in Path(folders["sd-cn"]).iterdir() if p.suffix in (".json", ".safetensors"))
    assert kept == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    assert set(kept) == {"config.json", "diffusion_pytorch_model.safetensors"}
    pipeline.components[0].save_weights(tmp_path / "saved")  # what option controlnet reads back
    again = SDControlNet(**options(folders, batch_size=2, controlnet=str(tmp_path / "saved")))
    assert torch.equal(again(Text(PROMPTS), seed=SEEDS, control=Image(pictures())).pixels, result.output.pixels)


def test_a_request_without_a_control_is_refused_before_anything_loads(tmp_path):
    nowhere = str(tmp_path / "no-such-controlnet")
    pipeline = loom.Pipeline.from_steps(("sd-controlnet", {"model": str(tmp_path / "no-model"), "controlnet": nowhere}))
    assert pipeline.takes == {"control": (Image, True)}
    with pytest.raises(InputError) as err:
        pipeline.run(PROMPTS, seed=0, progress=False)
    assert str(err.value) == (
        "step 1 ('sd-controlnet') takes control (Image), which this request does not give: pass control=…"
    )
    with pytest.raises(
        InputError, match=r"^SDControlNet takes control \(Image\), which was not given: pass control=…$"
    ):
        pipeline.components[0](Text(PROMPTS), seed=0)
    with pytest.raises(InputError, match="^no step of this chain takes 'image'"):
        pipeline.run(PROMPTS, seed=0, progress=False, control=Image(pictures()), image=Image(pictures()))
    assert not pipeline.components[0].loaded


def test_options_are_checked_when_the_step_is_built(tmp_path):
    folder = {"model": str(tmp_path), "controlnet": str(tmp_path)}
    with pytest.raises(ConfigError, match="option 'controlnet' is required"):
        SDControlNet(model=str(tmp_path))
    with pytest.raises(ConfigError, match="conditioning_scale"):
        SDControlNet(**folder, conditioning_scale=2.5)
    with pytest.raises(ConfigError, match="strength is for image-to-image; sd-controlnet draws from noise"):
        SDControlNet(**folder, strength=0.5)
    assert SDControlNet(**folder).config.conditioning_scale == 1.0


def test_a_controlnet_folder_that_is_missing_or_not_a_controlnet_is_refused_naming_it(tmp_path, monkeypatch):
    import json

    from loom.plugins.diffusion import runtime

    # the ControlNet is found before the base model loads
    monkeypatch.setattr(runtime, "load_pipeline", lambda *a, **k: pytest.fail("the base model may not load"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sd = tmp_path / "sd"  # what a pipeline folder looks like from outside: nothing here loads it
    (sd / "unet").mkdir(parents=True)
    (sd / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    (sd / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    single = tmp_path / "net.safetensors"
    single.write_bytes(b"")
    cases = {
        str(tmp_path / "absent"): f"ControlNet {str(tmp_path / 'absent')!r} is not on this machine",
        "nobody/absent-controlnet": "for the hub id in the Hugging Face cache",
        str(sd / "unet"): f"{str((sd / 'unet').resolve())!r} is not a diffusers ControlNetModel folder: its "
        "config.json is a UNet2DConditionModel's",
        str(sd): "it holds no config.json: it is a pipeline folder (give it as model:, and controlnet: a Control",
        str(single): "is a file, not a diffusers ControlNetModel folder: convert a single-file checkpoint first",
    }
    for given, expected in cases.items():
        step = SDControlNet(model=str(sd), controlnet=given, steps=1)
        with pytest.raises(WeightsError) as err:
            step(Text(PROMPTS[:1]), seed=0, control=Image(pictures(1)))
        message = str(err.value)
        assert message.startswith("sd-controlnet: ") and expected in message and "\n" not in message, message


@pytest.mark.slow
def test_a_bad_control_or_a_controlnet_for_another_model_is_refused_in_one_line(xl_folders, tmp_path):
    step = SDControlNet(**options(xl_folders))
    for bad in (torch.rand(1, 1, 32, 32), pictures(1) * 2):  # grey; outside [0, 1]
        with pytest.raises(InputError) as err:
            step(Text(PROMPTS[:1]), seed=0, control=Image(bad))
        assert str(err.value).startswith("sd-controlnet: the control is not a batch of RGB images in [0, 1] (")
        assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="^sd-controlnet: the control is 1×1 pixels, smaller than the 2-pixel blocks"):
        step(Text(PROMPTS[:1]), seed=0, control=Image(torch.rand(1, 3, 1, 1)))
    mixed = SDControlNet(**options(xl_folders, "xl", controlnet=xl_folders["sd-cn"]))
    with pytest.raises(ConfigError) as err:
        mixed(Text(PROMPTS[:1]), seed=0, control=Image(pictures(1)))
    assert str(err.value).startswith(
        f"sd-controlnet: the ControlNet in {xl_folders['sd-cn']!r} does not fit the model {xl_folders['xl']!r} ("
    )
    assert "use a ControlNet made for this model" in str(err.value) and "\n" not in str(err.value)
    unweighted = tmp_path / "unweighted"  # a ControlNet's config without its weights
    unweighted.mkdir()
    (unweighted / "config.json").write_bytes((Path(xl_folders["sd-cn"]) / "config.json").read_bytes())
    with pytest.raises(WeightsError) as err:
        SDControlNet(**options(xl_folders, controlnet=str(unweighted)))(
            Text(PROMPTS[:1]), seed=0, control=Image(pictures(1))
        )
    assert str(err.value).startswith(
        f"sd-controlnet: the ControlNet in {str(unweighted)!r} could not be loaded: OSError"
    )
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_the_cli_runs_a_spec_with_a_control_file_and_reproduces_it_only_with_that_file(folders, tmp_path):
    from click.testing import CliRunner
    from PIL import Image as PILImage

    from loom.cli import main
    from loom.outputs import read_image

    control = tmp_path / "control.png"
    PILImage.fromarray((pictures(1)[0].permute(1, 2, 0).numpy() * 255).round().astype("uint8")).save(control)
    spec = tmp_path / "cn.json"
    spec.write_text(json.dumps({"steps": [{"component": "sd-controlnet", "config": options(folders)}]}))
    res = CliRunner().invoke(
        main,
        [
            "run",
            str(spec),
            "-o",
            str(tmp_path / "out"),
            "-p",
            PROMPTS[0],
            "--seed",
            "3",
            "--control",
            str(control),
            "-q",
        ],
    )
    assert res.exit_code == 0, res.output
    made = tmp_path / "out" / "0001.png"
    # the same as the Python call with that control, read from the file by the same rule
    direct, _ = loom_run(folders, control=read_image(control).pixels, prompts=[PROMPTS[0]], seeds=[3])
    assert torch.equal(read_image(made).pixels, direct.output.pixels.clamp(0, 1).mul(255).round().div(255))
    again = tmp_path / "again.png"
    res = CliRunner().invoke(
        main, ["reproduce", str(made), "-o", str(again), "--check", "--control", str(control), "-q"]
    )
    assert res.exit_code == 0 and "same pixels as" in res.output, res.output
    res = CliRunner().invoke(main, ["reproduce", str(made), "-o", str(tmp_path / "no.png"), "-q"])
    assert res.exit_code != 0 and "--control FILE" in res.output and not (tmp_path / "no.png").exists()
