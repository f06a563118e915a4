"""LoRA adapters (issue 34, part 1): ``adapters: [{path, scale}]`` on stable-diffusion, sd-denoiser,
sd-text-encoder and the Shapes ``diffusion`` step. On a tiny random-weight SD folder with random LoRA
weights built here (UNet and text encoder, saved by diffusers' ``save_lora_weights``, and the same
weights in kohya's layout), Loom equals diffusers' ``load_lora_weights`` + ``set_adapters`` to ≤ 1e-4:
one adapter at scales 1 and 0.5, two at once with their own scales, the UNet part alone (sd-denoiser)
and the text encoder part alone (sd-text-encoder against ``encode_prompt``). Scale 0 gives the base
output exactly, two loads give the same output, a step without adapters is untouched by one with
them, and a file that is not a safetensors LoRA, is missing, or changes modules the model lacks is
refused in one line naming it."""

import pytest
import torch
from fakes import diffusion_kit_configs, random_embeddings
from safetensors.torch import load_file, save_file

from loom.core import ConfigError, Text, WeightsError
from loom.core.seeding import generators
from loom.plugins.diffusion import SDDenoiser, SDTextEncoder, ShapesDiffusion, StableDiffusion

PROMPTS = ["a photo of a cat", "a red circle on a blue background"]
SEEDS = [7, 8]
FAST = {"steps": 2, "guidance_scale": 5.0, "width": 32, "height": 32}
#: LoRA shapes: (rank, alpha, UNet modules, text encoder modules); alpha ≠ rank, so a loader that
#: ignored the alpha diffusers keeps in the file's header would not match
LORAS = {
    "one": (4, 8, ["to_q", "to_k", "to_v", "to_out.0"], ["q_proj", "k_proj", "v_proj", "out_proj"]),
    "two": (2, 2, ["to_k", "proj_in", "proj_out", "ff.net.2"], ["q_proj", "fc1", "fc2"]),
}


def randomise(model, name, seed):
    """Random values (not peft's zero lora_B) in adapter ``name``'s LoRA weights, so that it matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, param in sorted(model.named_parameters()):
            if ".lora_" in key and f".{name}." in key:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.3)


@pytest.fixture(scope="module")
def loras(tiny_sd, tmp_path_factory):
    """The adapter files: one and two (UNet and text encoder, diffusers' layout), unet-only, kohya (one's
    weights in kohya's layout), elsewhere (unet-only naming a block the tiny UNet lacks), not-lora."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from transformers import CLIPTextModel

    folder, _ = tiny_sd
    root = tmp_path_factory.mktemp("loras")
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder")
    layers = {}
    for seed, (name, (rank, alpha, unet_modules, te_modules)) in enumerate(LORAS.items()):
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, target_modules=unet_modules), adapter_name=name)
        text_encoder.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, target_modules=te_modules), adapter_name=name)
        randomise(unet, name, seed)
        randomise(text_encoder, name, 100 + seed)
        layers[name] = (get_peft_model_state_dict(unet, adapter_name=name), unet.peft_config[name].to_dict())
        te = (get_peft_model_state_dict(text_encoder, adapter_name=name), text_encoder.peft_config[name].to_dict())
        StableDiffusionPipeline.save_lora_weights(
            root,
            unet_lora_layers=layers[name][0],
            text_encoder_lora_layers=te[0],
            unet_lora_adapter_metadata=layers[name][1],
            text_encoder_lora_adapter_metadata=te[1],
            weight_name=f"{name}.safetensors",
        )
        if name == "one":
            save_file(kohya(layers[name][0], te[0], alpha), root / "kohya.safetensors")
    StableDiffusionPipeline.save_lora_weights(
        root,
        unet_lora_layers=layers["one"][0],
        unet_lora_adapter_metadata=layers["one"][1],
        weight_name="unet-only.safetensors",
    )
    unet_only = load_file(root / "unet-only.safetensors")
    elsewhere = {k.replace("down_blocks.1.", "down_blocks.3."): v for k, v in unet_only.items()}
    save_file(elsewhere, root / "elsewhere.safetensors")
    save_file({"conv.weight": torch.ones(4, 4)}, root / "not-lora.safetensors")
    return {
        name: str(root / f"{name}.safetensors")
        for name in ("one", "two", "unet-only", "kohya", "elsewhere", "not-lora")
    }


def kohya(unet_layers: dict, te_layers: dict, alpha: float) -> dict:
    """PEFT LoRA weights in kohya's layout: ``lora_unet_<module with _>.lora_down/up.weight`` and ``.alpha``
    (``lora_te_text_model_…`` for the text encoder), as kohya's sd-scripts write SD 1.x LoRAs."""
    out = {}
    for prefix, layers, model_prefix in (("lora_unet_", unet_layers, ""), ("lora_te_", te_layers, "text_model.")):
        for key, tensor in layers.items():
            module, _, kind = key.rpartition(".lora_")
            name = prefix + (model_prefix + module).replace(".", "_")
            out[f"{name}.lora_{'down' if kind.startswith('A') else 'up'}.weight"] = tensor.contiguous()
            out[f"{name}.alpha"] = torch.tensor(float(alpha))
    return out


def diffusers_pipe(folder, adapters=()):
    """diffusers' own pipeline on ``folder`` with ``adapters`` ((file, scale), ...) loaded by load_lora_weights and
    set by set_adapters."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    names = [f"a{i}" for i in range(len(adapters))]
    for name, (path, _) in zip(names, adapters):
        pipe.load_lora_weights(path, adapter_name=name)
    if adapters:
        pipe.set_adapters(names, adapter_weights=[scale for _, scale in adapters])
    return pipe


def diffusers_images(folder, adapters=()):
    pipe = diffusers_pipe(folder, adapters)
    gens = [torch.Generator().manual_seed(s) for s in SEEDS]
    return pipe(
        PROMPTS, generator=gens, output_type="pt", num_inference_steps=2, guidance_scale=5.0, width=32, height=32
    ).images


def loom_images(folder, adapters=()):
    step = StableDiffusion(model=folder, adapters=[{"path": p, "scale": s} for p, s in adapters], **FAST).load()
    return step.run(Text(PROMPTS), generators(SEEDS)).pixels


@pytest.fixture(scope="module")
def base(tiny_sd):
    return loom_images(tiny_sd[0])


@pytest.mark.slow
@pytest.mark.parametrize(
    "case",
    [[("one", 1.0)], [("one", 0.5)], [("one", 0.7), ("two", -0.4)], [("unet-only", 1.0)], [("kohya", 0.8)]],
    ids=["one", "one-at-half", "two-at-once", "unet-only", "kohya"],
)
def test_loom_equals_diffusers_load_lora_weights_and_set_adapters(tiny_sd, loras, base, case):
    folder, _ = tiny_sd
    adapters = [(loras[name], scale) for name, scale in case]
    ours, theirs = loom_images(folder, adapters), diffusers_images(folder, adapters).float()
    assert ours.shape == theirs.shape == (2, 3, 32, 32)
    assert (ours - theirs).abs().max() <= 1e-4
    assert (ours - base).abs().max() > 1e-3  # the adapters changed the images


@pytest.mark.slow
def test_kohya_layout_is_the_same_adapter_as_the_diffusers_layout(tiny_sd, loras):
    folder, _ = tiny_sd
    assert (
        loom_images(folder, [(loras["kohya"], 0.8)]) - loom_images(folder, [(loras["one"], 0.8)])
    ).abs().max() <= 1e-4


@pytest.mark.slow
def test_scale_zero_gives_the_base_output_exactly(tiny_sd, loras, base):
    folder, _ = tiny_sd
    assert torch.equal(loom_images(folder, [(loras["one"], 0.0)]), base)
    assert torch.equal(loom_images(folder, [(loras["one"], 0.0), (loras["kohya"], 0.0)]), base)
    plain = SDTextEncoder(model=folder).load().run(Text(PROMPTS), generators(SEEDS))
    zero = SDTextEncoder(model=folder, adapters=[{"path": loras["one"], "scale": 0}]).load()
    assert torch.equal(zero.run(Text(PROMPTS), generators(SEEDS)).tokens, plain.tokens)


@pytest.mark.slow
def test_two_loads_give_the_same_output_and_steps_without_adapters_stay_untouched(tiny_sd, loras, base):
    from loom.plugins.diffusion import runtime

    folder, _ = tiny_sd
    first = loom_images(folder, [(loras["one"], 0.6)])
    runtime._parts.clear()  # a fresh load from disk, not the part kept from the first
    assert torch.equal(loom_images(folder, [(loras["one"], 0.6)]), first)
    # the parts with adapters are their own copies: a step without them still gives the base images
    assert torch.equal(loom_images(folder), base)


@pytest.mark.slow
def test_sd_text_encoder_takes_the_text_encoder_part(tiny_sd, loras):
    folder, _ = tiny_sd
    adapters = [(loras["one"], 0.9), (loras["two"], 0.5)]
    step = SDTextEncoder(model=folder, adapters=[{"path": p, "scale": s} for p, s in adapters]).load()
    ours = step.run(Text(PROMPTS), generators(SEEDS))
    pipe = diffusers_pipe(folder, adapters)
    with torch.no_grad():
        tokens, negative = pipe.encode_prompt(PROMPTS, "cpu", 1, True)
    assert (ours.tokens - tokens).abs().max() <= 1e-4
    assert (ours.negative_tokens - negative).abs().max() <= 1e-4
    plain = SDTextEncoder(model=folder).load().run(Text(PROMPTS), generators(SEEDS))
    assert (ours.tokens - plain.tokens).abs().max() > 1e-3


@pytest.mark.slow
def test_sd_denoiser_takes_the_unet_part(tiny_sd, loras):
    folder, _ = tiny_sd
    emb = SDTextEncoder(model=folder).load().run(Text(PROMPTS), generators(SEEDS))
    step = SDDenoiser(model=folder, adapters=[{"path": loras["one"], "scale": 0.8}], **FAST).load()
    ours = step.run(emb, generators(SEEDS)).tensor
    pipe = diffusers_pipe(folder, [(loras["one"], 0.8)])  # its text encoder's LoRA is not used: embeddings are given
    theirs = pipe(
        prompt_embeds=emb.tokens,
        negative_prompt_embeds=emb.negative_tokens,
        generator=[torch.Generator().manual_seed(s) for s in SEEDS],
        output_type="latent",
        num_inference_steps=2,
        guidance_scale=5.0,
        width=32,
        height=32,
    ).images
    assert (ours - theirs).abs().max() <= 1e-4
    plain = SDDenoiser(model=folder, **FAST).load().run(emb, generators(SEEDS)).tensor
    assert (ours - plain).abs().max() > 1e-3


@pytest.mark.slow
def test_an_sdxl_folder_takes_adapters_into_both_text_encoders(tmp_path):
    from diffusers import StableDiffusionXLPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from loom.plugins.diffusion.tiny import build_tiny_xl_pipeline

    folder = str(tmp_path / "xl")
    build_tiny_xl_pipeline(folder)
    pipe = StableDiffusionXLPipeline.from_pretrained(folder)
    layers = {}
    for seed, (part, targets) in enumerate(
        {
            "unet": ["to_q", "to_k"],
            "text_encoder": ["q_proj", "v_proj"],
            "text_encoder_2": ["q_proj", "out_proj"],
        }.items()
    ):
        model = getattr(pipe, part)
        model.add_adapter(LoraConfig(r=2, lora_alpha=4, target_modules=targets), adapter_name="x")
        randomise(model, "x", seed)
        layers[f"{part}_lora_layers"] = get_peft_model_state_dict(model, adapter_name="x")
        layers[f"{part}_lora_adapter_metadata"] = model.peft_config["x"].to_dict()
    StableDiffusionXLPipeline.save_lora_weights(tmp_path, weight_name="xl.safetensors", **layers)
    lora = str(tmp_path / "xl.safetensors")
    ours = StableDiffusion(model=folder, adapters=[{"path": lora, "scale": 0.7}], **FAST).load()
    ours = ours.run(Text(PROMPTS), generators(SEEDS)).pixels
    peer = StableDiffusionXLPipeline.from_pretrained(folder)
    peer.set_progress_bar_config(disable=True)
    peer.load_lora_weights(lora, adapter_name="a")
    peer.set_adapters(["a"], adapter_weights=[0.7])
    gens = [torch.Generator().manual_seed(s) for s in SEEDS]
    theirs = peer(
        PROMPTS, generator=gens, output_type="pt", num_inference_steps=2, guidance_scale=5.0, width=32, height=32
    ).images
    assert (ours - theirs).abs().max() <= 1e-4
    emb = (
        SDTextEncoder(model=folder, adapters=[{"path": lora, "scale": 0.7}])
        .load()
        .run(Text(PROMPTS), generators(SEEDS))
    )
    with torch.no_grad():
        tokens, _, pooled, _ = peer.encode_prompt(
            PROMPTS, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True
        )
    assert (emb.tokens - tokens).abs().max() <= 1e-4 and (emb.pooled - pooled).abs().max() <= 1e-4
    plain = SDTextEncoder(model=folder).load().run(Text(PROMPTS), generators(SEEDS))
    assert (emb.pooled - plain.pooled).abs().max() > 1e-3  # the second text encoder's adapter counts


# -- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["style.bin", "style.pt", "style.ckpt"])
def test_a_pickle_file_is_refused_before_anything_loads(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"not read")
    with pytest.raises(ConfigError) as err:
        StableDiffusion(model="unused", adapters=[{"path": str(path)}])
    message = str(err.value).splitlines()[0]  # then the accepted options
    assert name in message and "safetensors files only" in message


def test_a_missing_adapter_file_is_refused_naming_it(tmp_path):
    path = tmp_path / "gone.safetensors"
    with pytest.raises(ConfigError) as err:
        SDDenoiser(model="unused", adapters=[str(path)])
    message = str(err.value).splitlines()[0]
    assert str(path) in message and "does not exist" in message


def test_a_folder_without_adapter_safetensors_is_refused(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError) as err:
        ShapesDiffusion(adapters=[str(tmp_path)])
    assert f"adapter folder {str(tmp_path)!r} holds no adapter.safetensors" in str(err.value).splitlines()[0]


def test_a_scale_out_of_bounds_and_fused_projections_are_refused(loras):
    with pytest.raises(ConfigError, match="scale"):
        StableDiffusion(model="unused", adapters=[{"path": loras["one"], "scale": 5}])
    with pytest.raises(ConfigError, match="fuse_qkv"):
        StableDiffusion(model="unused", adapters=[loras["one"]], fuse_qkv=True)


@pytest.mark.slow
def test_an_adapter_for_modules_the_model_lacks_is_refused_naming_one(tiny_sd, loras):
    folder, _ = tiny_sd
    with pytest.raises(WeightsError) as err:
        StableDiffusion(model=folder, adapters=[loras["elsewhere"]], **FAST).load()
    message = str(err.value)
    assert "\n" not in message and loras["elsewhere"] in message
    assert "down_blocks.3.attentions.0.transformer_blocks.0.attn1.to_" in message and "UNet" in message


@pytest.mark.slow
def test_files_that_are_no_lora_or_do_not_belong_on_the_step_are_refused(tiny_sd, loras):
    folder, _ = tiny_sd
    with pytest.raises(WeightsError, match="is not a LoRA adapter: its tensor 'conv.weight'"):
        SDDenoiser(model=folder, adapters=[loras["not-lora"]], **FAST).load()
    # a UNet-only adapter on the text encoder step: it belongs on the step that runs the UNet
    with pytest.raises(WeightsError, match="holds weights for the UNet only") as err:
        SDTextEncoder(model=folder, adapters=[loras["unet-only"]]).load()
    assert loras["unet-only"] in str(err.value)


# -- the Shapes diffusion model ------------------------------------------------------------------


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """A tiny random-weight Shapes diffusion folder and a LoRA for its UNet, saved the way peft saves one
    model's adapter (``unet.save_lora_adapter``: keys with no part prefix)."""
    from peft import LoraConfig

    from loom.plugins.diffusion import shapes as shapes_model

    root = tmp_path_factory.mktemp("shapes-adapters")
    torch.manual_seed(0)
    cfg = shapes_model.ShapesDiffusionConfig(block_out_channels=[32, 32], attention_head_dim=8)
    model = shapes_model.ShapesDiffusionModel(cfg)
    folder = str(model.save(root / "shapes-diffusion"))
    model.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_v", "proj_out"]), adapter_name="s")
    randomise(model.unet, "s", 0)
    model.unet.save_lora_adapter(root, adapter_name="s", weight_name="shapes.safetensors")
    # the same weights as `loom train lora` writes them: a folder with adapter.safetensors, keys under unet.
    (root / "trained").mkdir()
    save_file(
        {f"unet.{k}": v for k, v in load_file(root / "shapes.safetensors").items()},
        root / "trained" / "adapter.safetensors",
    )
    return folder, str(root / "shapes.safetensors"), str(root / "trained")


def shapes_embeddings(n=2):
    return random_embeddings(n)


def shapes_images(folder, *adapters, **options):
    step = ShapesDiffusion(weights=folder, steps=2, guidance_scale=1.0, adapters=list(adapters), **options)
    return step(shapes_embeddings(), seed=[1, 2]).pixels


@pytest.mark.slow
def test_the_shapes_unet_takes_adapters(shapes, tmp_path):
    folder, lora, trained = shapes
    plain = shapes_images(folder)
    assert torch.equal(shapes_images(folder, {"path": lora, "scale": 0.0}), plain)
    changed = shapes_images(folder, {"path": lora, "scale": 1.5})
    assert (changed - plain).abs().max() > 1e-3
    assert torch.equal(shapes_images(folder, {"path": lora, "scale": 1.5}), changed)  # a second load
    assert (shapes_images(folder, {"path": trained, "scale": 1.5}) - changed).abs().max() <= 1e-6  # its folder
    # a saved folder holds the trained weights; the adapters stay an option
    step = ShapesDiffusion(weights=folder, adapters=[lora]).load()
    saved = step.save_weights(tmp_path / "saved")
    assert torch.equal(shapes_images(str(saved)), plain)


@pytest.mark.slow
def test_the_shapes_unet_refuses_adapters_that_do_not_fit(shapes, loras):
    folder = shapes[0]
    with pytest.raises(WeightsError, match="down_blocks.3.") as err:
        ShapesDiffusion(weights=folder, adapters=[loras["elsewhere"]]).load()
    assert loras["elsewhere"] in str(err.value) and "\n" not in str(err.value)
    # the SD adapter's UNet modules have other sizes than this UNet's
    with pytest.raises(WeightsError, match="does not fit this UNet: its module '.*' has 32 inputs"):
        ShapesDiffusion(weights=folder, adapters=[loras["unet-only"]]).load()
    with pytest.raises(WeightsError, match="holds weights for a text encoder"):
        ShapesDiffusion(weights=folder, adapters=[loras["one"]]).load()


# -- sd-controlnet and the conformance kit ---------------------------------------------------------


def control_pictures(count=2, size=32):
    g = torch.Generator().manual_seed(3)
    coarse = torch.rand(count, 3, size // 4, size // 4, generator=g)
    return (torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear") * 255).round() / 255


@pytest.mark.slow
def test_sd_controlnet_with_adapters_equals_diffusers(tiny_sd, loras, tmp_path):
    import diffusers

    from loom.core import Image
    from loom.plugins.diffusion import SDControlNet
    from loom.plugins.diffusion.tiny import build_tiny_controlnet

    folder = tiny_sd[0]
    net = build_tiny_controlnet(folder, tmp_path / "controlnet")
    adapters = [(loras["one"], 0.7), (loras["two"], -0.4)]
    control = control_pictures()

    def ours(*chosen):
        options = dict(model=folder, controlnet=net, steps=2, guidance_scale=5.0, batch_size=2)
        step = SDControlNet(adapters=[{"path": p, "scale": s} for p, s in chosen], **options).load()
        return step.run(Text(PROMPTS), generators(SEEDS), control=Image(control)).pixels

    pipe = diffusers.StableDiffusionControlNetPipeline.from_pretrained(
        folder, controlnet=diffusers.ControlNetModel.from_pretrained(net)
    )
    pipe.set_progress_bar_config(disable=True)
    for i, (path, _) in enumerate(adapters):
        pipe.load_lora_weights(path, adapter_name=f"a{i}")
    pipe.set_adapters(["a0", "a1"], adapter_weights=[s for _, s in adapters])
    gens = [torch.Generator().manual_seed(s) for s in SEEDS]
    theirs = pipe(PROMPTS, image=control, num_inference_steps=2, guidance_scale=5.0, generator=gens, output_type="pt")
    adapted = ours(*adapters)
    assert (adapted - theirs.images.float()).abs().max() <= 1e-4
    assert (adapted - ours()).abs().max() > 1e-3  # the adapters matter


@pytest.mark.slow
def test_the_kit_checks_every_diffusion_step_that_takes_adapters(tiny_sd, loras, shapes, tmp_path):
    from loom.plugins.diffusion.tiny import build_tiny_controlnet
    from loom.testing import check_plugin, example_inputs

    folder = tiny_sd[0]
    encoder = SDTextEncoder(model=folder)
    report = check_plugin(
        "diffusion",
        only=["adapters"],
        configs=diffusion_kit_configs(folder, shapes[0], build_tiny_controlnet(folder, tmp_path / "cn"), **FAST),
        inputs={
            "sd-denoiser": lambda n: encoder(example_inputs(Text, n), seed=0),
            "diffusion": random_embeddings,
            "diffusion-fast": random_embeddings,
        },
        adapters={
            "stable-diffusion": loras["one"],
            "sd-text-encoder": loras["two"],
            "sd-denoiser": loras["unet-only"],
            "sd-controlnet": loras["kohya"],
            "diffusion": shapes[1],
            "diffusion-fast": shapes[1],  # a distilled model is the teacher's UNet: its adapters fit
        },
    )
    checked = {r.component: r.status for r in report.results if r.check == "adapters"}
    assert checked == dict.fromkeys(
        ["stable-diffusion", "sd-text-encoder", "sd-denoiser", "sd-controlnet", "diffusion", "diffusion-fast"], "passed"
    ), str(report)


@pytest.mark.slow
def test_loom_generate_takes_adapters_and_reproduce_checks_them(shapes, tmp_path):
    import shutil

    from click.testing import CliRunner

    from loom.cli import main
    from loom.outputs import read_record

    folder, lora, _ = shapes
    mine = tmp_path / "mine.safetensors"
    shutil.copy(lora, mine)
    out = tmp_path / "star.png"
    args = ["generate", "a red circle", "--generator", folder, "--seed", "4", "--size", "32", "-q"]
    res = CliRunner().invoke(main, [*args, "--adapter", f"{mine}:0.5", "-o", str(out)])
    assert res.exit_code == 0, res.output
    kept = [c["adapters"] for c in read_record(out)["components"] if "adapters" in c]
    assert kept == [[{"path": str(mine), "sha256": kept[0][0]["sha256"], "scale": 0.5}]]
    plain = tmp_path / "plain.png"
    assert CliRunner().invoke(main, [*args, "-o", str(plain)]).exit_code == 0
    assert out.read_bytes() != plain.read_bytes()  # the adapter changed the picture
    res = CliRunner().invoke(main, ["reproduce", str(out), "-o", str(tmp_path / "again.png"), "--check", "-q"])
    assert res.exit_code == 0 and "same pixels as" in res.output, res.output
    mine.write_bytes(mine.read_bytes()[:-4] + b"\0\0\0\0")  # the adapter file changed since
    res = CliRunner().invoke(main, ["reproduce", str(out), "-o", str(tmp_path / "no.png"), "-q"])
    assert res.exit_code != 0 and str(mine) in res.output and not (tmp_path / "no.png").exists(), res.output
    res = CliRunner().invoke(main, ["generate", "a red circle", "--adapter", str(mine), "-o", str(tmp_path / "x.png")])
    assert res.exit_code != 0 and "no step of this chain takes adapters" in res.output


# -- adapters of the Shapes model's autoencoder decoder ---------------------------------------------


@pytest.mark.slow
def test_decoder_adapters_are_checked_against_the_decoder_and_refused_elsewhere(tiny_sd, tmp_path):
    from fakes import tiny_shapes_diffusion

    folder = tiny_shapes_diffusion(tmp_path / "shapes")
    fits = {
        "decoder.conv_out.lora_A.weight": torch.ones(2, 8, 3, 3),
        "decoder.conv_out.lora_B.weight": torch.ones(3, 2, 1, 1),
    }
    wrong_module = {k.replace("conv_out", "conv_nowhere"): v for k, v in fits.items()}
    wrong_size = {**fits, "decoder.conv_out.lora_A.weight": torch.ones(2, 5, 3, 3)}
    for name, tensors in (("fits", fits), ("module", wrong_module), ("size", wrong_size)):
        save_file(tensors, tmp_path / f"{name}.safetensors")
    plain = ShapesDiffusion(weights=folder, steps=2, guidance_scale=1.0)(random_embeddings(2), seed=[1, 2]).pixels
    drawn = ShapesDiffusion(weights=folder, steps=2, guidance_scale=1.0, adapters=[str(tmp_path / "fits.safetensors")])
    assert (drawn(random_embeddings(2), seed=[1, 2]).pixels - plain).abs().max() > 1e-3
    with pytest.raises(WeightsError, match="does not fit this autoencoder's decoder: it changes module 'conv_nowhere'"):
        ShapesDiffusion(weights=folder, adapters=[str(tmp_path / "module.safetensors")]).load()
    with pytest.raises(WeightsError, match="its module 'conv_out' has 8 inputs, the adapter's weights for it 5"):
        ShapesDiffusion(weights=folder, adapters=[str(tmp_path / "size.safetensors")]).load()
    with pytest.raises(WeightsError, match="holds weights for an autoencoder's decoder, which only the Shapes"):
        StableDiffusion(model=tiny_sd[0], adapters=[str(tmp_path / "fits.safetensors")]).load()
