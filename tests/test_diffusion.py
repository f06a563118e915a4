"""Diffusion through diffusers: a tiny SD-shaped pipeline folder (built from configs once per
session, see conftest.tiny_sd) gives the same images through Loom as through diffusers'
StableDiffusionPipeline; the three typed pieces equal the one step; errors come before loading
and name what to do; denoising steps reach the progress hook; the Shapes diffusion family trains,
resumes exactly and generates from its folder."""

import json
import time

import pytest
import torch
from fakes import ctrl_c_at, diffusion_kit_configs
from safetensors.torch import load_file

import loom
from loom.chains import Pipeline
from loom.core import ConfigError, Embedding, InputError, Latent, Text, WeightsError, discover, hookimpl
from loom.plugins.diffusion import SCHEDULERS, SDDenoiser, SDTextEncoder, SDVAEDecode, StableDiffusion
from loom.plugins.diffusion.tiny import build_tiny_controlnet

PROMPTS = ["a photo of a cat", "a red circle on a blue background"]
SIZE = {"width": 32, "height": 32}


def raw_diffusers(folder, scheduler, prompts, seeds, steps, guidance_scale=7.5, negative_prompt=None, **size):
    """The peer: diffusers' StableDiffusionPipeline on the same folder, called directly."""
    import diffusers
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(folder)
    cls_name, options = SCHEDULERS[scheduler]
    if cls_name:
        pipe.scheduler = getattr(diffusers, cls_name).from_config(pipe.scheduler.config, **options)
    pipe.set_progress_bar_config(disable=True)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    return pipe(
        prompts,
        negative_prompt=negative_prompt,
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        generator=gens,
        output_type="pt",
        **size,
    ).images


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["ddim", "euler", "dpm++2m", "euler-ancestral"])
def test_loom_equals_diffusers(tiny_sd, scheduler):
    folder, _ = tiny_sd
    config = {"model": folder, "scheduler": scheduler, "steps": 4, **SIZE}
    loom_px = Pipeline.from_steps(("stable-diffusion", config)).run(PROMPTS, seed=7, progress=False).output.pixels
    peer = raw_diffusers(folder, scheduler, PROMPTS, [7, 8], steps=4, **SIZE)
    assert loom_px.shape == peer.shape == (2, 3, 32, 32)
    assert (loom_px - peer.float()).abs().max() <= 1e-4
    assert loom_px.std() > 0.01  # an image, not a constant


@pytest.mark.slow
def test_loom_equals_diffusers_with_negative_prompt_and_default_size(tiny_sd):
    folder, _ = tiny_sd
    config = {"model": folder, "scheduler": "ddim", "steps": 3, "guidance_scale": 5.0, "negative_prompt": "a dog"}
    loom_px = Pipeline.from_steps(("stable-diffusion", config)).run(PROMPTS[:1], seed=1, progress=False).output.pixels
    peer = raw_diffusers(folder, "ddim", PROMPTS[:1], [1], steps=3, guidance_scale=5.0, negative_prompt=["a dog"])
    assert loom_px.shape == (1, 3, 64, 64)  # the UNet's 32-px sample size × the VAE's factor 2
    assert (loom_px - peer.float()).abs().max() <= 1e-4


@pytest.mark.slow
def test_three_typed_pieces_equal_the_one_step(tiny_sd):
    folder, _ = tiny_sd
    sampling = {"scheduler": "dpm++2m", "steps": 4, "guidance_scale": 6.0, **SIZE}
    one = Pipeline.from_steps(("stable-diffusion", {"model": folder, "negative_prompt": "blurry", **sampling}))
    three = Pipeline.from_steps(
        ("sd-text-encoder", {"model": folder, "negative_prompt": "blurry"}),
        ("sd-denoiser", {"model": folder, **sampling}),
        ("sd-vae-decode", {"model": folder}),
    )
    assert three.input_type is Text and three.output_type is loom.Image
    a = one.run(PROMPTS, seed=3, progress=False).output.pixels
    b = three.run(PROMPTS, seed=3, progress=False).output.pixels
    assert (a - b).abs().max() <= 1e-6
    # the pieces share one loaded copy of each part
    assert three.components[1].pipe.vae is three.components[2].vae


@pytest.mark.slow
def test_an_sdxl_folder_equals_diffusers_in_one_step_and_in_three(tmp_path):
    from diffusers import StableDiffusionXLPipeline

    from loom.plugins.diffusion.tiny import build_tiny_xl_pipeline

    folder = str(tmp_path / "tiny-xl")
    build_tiny_xl_pipeline(folder)
    config = {"model": folder, "steps": 3, "guidance_scale": 5.0, "scheduler": "euler", **SIZE}
    one = Pipeline.from_steps(("stable-diffusion", config)).run(PROMPTS, seed=1, progress=False).output.pixels
    three = (
        Pipeline.from_steps(
            ("sd-text-encoder", {"model": folder}), ("sd-denoiser", config), ("sd-vae-decode", {"model": folder})
        )
        .run(PROMPTS, seed=1, progress=False)
        .output.pixels
    )
    raw = StableDiffusionXLPipeline.from_pretrained(folder)
    raw.set_progress_bar_config(disable=True)
    peer = raw(
        PROMPTS,
        num_inference_steps=3,
        guidance_scale=5.0,
        generator=[torch.Generator().manual_seed(s) for s in (1, 2)],
        output_type="pt",
        **SIZE,
    ).images
    assert (one - three).abs().max() <= 1e-6
    assert (one - peer.float()).abs().max() <= 1e-4


@pytest.mark.slow
def test_text_encoder_carries_negative_embeddings(tiny_sd):
    folder, _ = tiny_sd
    emb = SDTextEncoder(model=folder, negative_prompt="a dog")(Text(PROMPTS), seed=0)
    assert emb.tokens.shape == emb.negative_tokens.shape == (2, 77, 32)
    assert emb.negative_mask.shape == (2, 77) and emb.encoder == f"diffusers:{folder}"
    assert torch.equal(emb.negative_tokens[0], emb.negative_tokens[1])
    joined = Embedding.concat([emb.take([1]), emb.take([0])])
    assert torch.equal(joined.negative_tokens[1], emb.negative_tokens[0])


@pytest.mark.slow
def test_an_item_is_the_same_alone_and_in_a_batch(tiny_sd):
    folder, _ = tiny_sd
    for batch_size in (1, 2):
        pipeline = Pipeline.from_steps(
            ("stable-diffusion", {"model": folder, "steps": 2, "batch_size": batch_size, **SIZE})
        )
        batch = pipeline.run(["x", PROMPTS[0], "y"], seed=[4, 9, 5], progress=False).output.pixels
        alone = pipeline.run([PROMPTS[0]], seed=[9], progress=False).output.pixels
        assert (batch[1] - alone[0]).abs().max() <= 1e-6


def test_a_missing_model_says_where_loom_looked_and_how_to_get_it(tmp_path):
    from huggingface_hub import constants

    start = time.perf_counter()
    with pytest.raises(WeightsError) as err:
        StableDiffusion(model="someone/not-a-cached-model").load()
    text = str(err.value)
    assert "'someone/not-a-cached-model' is not on this machine" in text
    assert constants.HF_HUB_CACHE in text and "HF_HUB_OFFLINE=1" in text
    assert "huggingface-cli download someone/not-a-cached-model" in text
    with pytest.raises(WeightsError, match="holds no model_index.json"):
        SDVAEDecode(model=str(tmp_path)).load()
    with pytest.raises(WeightsError, match="is not on this machine: Loom looked for a folder"):
        SDTextEncoder(model=str(tmp_path / "nowhere" / "sd")).load()
    assert time.perf_counter() - start < 10  # no network wait


def test_cli_reports_a_missing_model_in_one_line(tmp_path):
    from click.testing import CliRunner

    from loom.cli import main

    spec = tmp_path / "sd.yaml"
    spec.write_text("steps:\n  - component: stable-diffusion\n    config: {model: someone/absent}\n")
    res = CliRunner().invoke(main, ["run", str(spec), "-p", "a cat", "-o", str(tmp_path / "out"), "-q"])
    assert res.exit_code == 1
    assert (
        res.output.startswith("error: diffusers model 'someone/absent' is not on this machine")
        and "Traceback" not in res.output
    )


def test_an_unknown_scheduler_is_a_config_error_before_anything_loads(monkeypatch):
    from loom.plugins.diffusion import runtime

    monkeypatch.setattr(runtime, "load_pipeline", lambda *a, **k: pytest.fail("nothing may load"))
    for component in ("stable-diffusion", "sd-denoiser"):
        with pytest.raises(ConfigError) as err:
            Pipeline.from_steps(("sd-text-encoder", {}), (component, {"scheduler": "warp-drive"}))
        text = str(err.value)
        assert "'scheduler' = 'warp-drive'" in text
        for name in ("ddim", "euler", "euler-ancestral", "dpm++2m"):
            assert f"'{name}'" in text
    with pytest.raises(ConfigError, match="multiple of 8"):
        StableDiffusion(width=30)
    with pytest.raises(ConfigError, match="fuse_qkv works with attention: sdpa only"):
        StableDiffusion(fuse_qkv=True, attention="eager")


@pytest.mark.slow
def test_denoising_steps_reach_the_progress_hook_and_bar(tiny_sd):
    folder, _ = tiny_sd
    seen, ends = [], []

    class Watcher:
        @hookimpl
        def loom_step_progress(self, step, index, done, total, unit):
            seen.append((step.component, index, done, total, unit))

        @hookimpl
        def loom_step_end(self, index):
            ends.append(index)

    registry = discover(env={"LOOM_PLUGINS": "diffusion"})
    registry.add_plugin(Watcher(), "watcher")
    pipeline = loom.Pipeline.from_steps(
        ("sd-text-encoder", {"model": folder}),
        ("sd-denoiser", {"model": folder, "steps": 3, **SIZE}),
        ("sd-vae-decode", {"model": folder}),
        registry=registry,
    )
    pipeline.run(PROMPTS, seed=0, progress=False)
    # two items run one at a time (batch_size 1): 3 steps each, counted over the whole batch
    assert seen == [("sd-denoiser", 1, d, 6, "denoising step") for d in range(1, 7)]
    assert ends == [0, 1, 2]

    # the bar moves by thirds of an item and still ends on whole numbers, never past its total
    import tqdm.auto

    positions = []

    class Bar(tqdm.auto.tqdm):
        def update(self, n=1):
            shown = super().update(n)
            positions.append((self.desc, self.n, self.total))
            return shown

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tqdm.auto, "tqdm", Bar)
        pipeline.run(PROMPTS, seed=0, progress=True)
    generating = [(n, total) for desc, n, total in positions if desc == "generating"]
    assert len(generating) > 6 and all(0 < n <= total for n, total in generating)
    assert [n for n, _ in generating if n == int(n)] == [1, 2, 3, 4, 5, 6], generating

    calls = []
    one = StableDiffusion(model=folder, steps=2, **SIZE)
    one(Text(PROMPTS), seed=0, work=lambda done, total, unit: calls.append((done, total)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


@pytest.mark.slow
def test_pieces_refuse_what_they_cannot_use(tiny_sd):
    folder, _ = tiny_sd
    minilm_like = Embedding(tokens=torch.zeros(1, 8, 384), mask=torch.ones(1, 8), encoder="all-MiniLM-L6-v2")
    with pytest.raises(InputError, match="attends to 32-wide token embeddings, got 384-wide"):
        SDDenoiser(model=folder, steps=1, **SIZE)(minilm_like, seed=0)
    no_negative = Embedding(tokens=torch.zeros(1, 77, 32), mask=torch.ones(1, 77), encoder="other")
    with pytest.raises(InputError, match="needs negative embeddings"):
        SDDenoiser(model=folder, steps=1, **SIZE)(no_negative, seed=0)
    unguided = SDDenoiser(model=folder, steps=1, guidance_scale=1.0, **SIZE)(no_negative, seed=0)
    assert unguided.tensor.shape == (1, 4, 16, 16) and unguided.space.startswith("diffusers:")
    with pytest.raises(InputError, match="takes the scaled latents of a diffusers pipeline"):
        SDVAEDecode(model=folder)(Latent(torch.zeros(1, 4, 8, 8), space="vae"), seed=0)


@pytest.mark.slow
def test_the_diffusion_plugin_passes_the_conformance_kit(tiny_sd, tmp_path):
    from loom.testing import EXAMPLE_ENCODER, EXAMPLE_TEXT_DIM, check_plugin

    folder, _ = tiny_sd
    shapes_folder = tiny_shapes_folder(tmp_path, text_dim=EXAMPLE_TEXT_DIM, encoder=EXAMPLE_ENCODER)
    encoder = SDTextEncoder(model=folder)

    def embeddings(count):
        return encoder(loom.testing.example_inputs(Text, count), seed=0)

    def latents(count):
        gens = [torch.Generator().manual_seed(i) for i in range(count)]
        return Latent(torch.stack([torch.randn(4, 8, 8, generator=g) for g in gens]), space="diffusers:test")

    report = check_plugin(
        "diffusion",
        configs=diffusion_kit_configs(
            folder, shapes_folder, build_tiny_controlnet(folder, tmp_path / "cn"), steps=2, **SIZE
        ),
        inputs={"sd-denoiser": embeddings, "sd-vae-decode": latents},
        only=[c.name for c in loom.testing.CHECKS],  # check "adapters", with adapters that fit: tests/test_adapters.py
    )
    assert not report.failures, str(report)
    # every registered component met every check of the kit, but those its declared capabilities
    # rule out: a skip for any other reason (a load or call that raised) is not a pass
    import re

    from loom.testing import CHECKS

    classes = {e.name: e.cls for e in discover(env={"LOOM_PLUGINS": "diffusion"}).components()}
    assert len(report.results) == 1 + len(classes) * len(CHECKS), str(report)
    for result in report.skipped:
        declared = re.match(r"it declares .*capabilities\.(\w+) (= False|is None)", result.message)
        assert declared, str(result)
        said = {"= False": False, "is None": None}[declared[2]]
        assert getattr(classes[result.component].capabilities, declared[1]) is said, str(result)
    assert report.counts["passed"] == len(report.results) - len(report.skipped) > len(classes) * (len(CHECKS) - 2)


# -- the Shapes diffusion family --------------------------------------------------------------

# a tiny autoencoder (64×64 → 16×16×4) that trains for the first half of the run, then the UNet
TINY_OPTIONS = {
    "batch_size": 8,
    "lr": 2e-3,
    "channels": [32, 32],
    "attention_head_dim": 8,
    "sample_steps": 2,
    "autoencoder_channels": [8, 8, 8],
    "latent_channels": 4,
    "autoencoder_share": 0.5,
}
TINY_AUTOENCODER = {"block_out_channels": [8, 8, 8], "latent_channels": 4, "shift": 0.1, "scale": 2.0}


def tiny_shapes_folder(root, text_dim=384, encoder="all-MiniLM-L6-v2", autoencoder=None):
    from loom.plugins.diffusion import shapes

    torch.manual_seed(0)
    cfg = shapes.ShapesDiffusionConfig(
        block_out_channels=[32, 32], attention_head_dim=8, text_dim=text_dim, encoder=encoder, autoencoder=autoencoder
    )
    return str(shapes.ShapesDiffusionModel(cfg).save(root / "shapes-diffusion"))


@pytest.mark.slow
@pytest.mark.parametrize("autoencoder", [None, TINY_AUTOENCODER], ids=["folded-pixels", "latent"])
def test_the_shapes_generator_samples_from_a_folder_per_item(tmp_path, autoencoder, monkeypatch):
    from loom.plugins.diffusion import ShapesDiffusion

    folder = tiny_shapes_folder(tmp_path, autoencoder=autoencoder)
    gen = torch.Generator().manual_seed(0)
    emb = Embedding(
        tokens=torch.randn(3, 6, 384, generator=gen),
        mask=torch.ones(3, 6),
        encoder="all-MiniLM-L6-v2",
        pooled=torch.randn(3, 384, generator=gen),
    )
    for scheduler in ("dpm++2m", "euler-ancestral"):
        component = ShapesDiffusion(weights=folder, steps=3, scheduler=scheduler)
        batch = component(emb, seed=[1, 2, 3])
        assert batch.pixels.shape == (3, 3, 64, 64) and 0 <= batch.pixels.min() and batch.pixels.max() <= 1
        alone = component(emb.take([1]), seed=[2])
        assert torch.equal(alone.pixels[0], batch.pixels[1])
    with pytest.raises(InputError, match="use the text-encoder step"):
        component(Embedding(tokens=emb.tokens, mask=emb.mask, encoder="clip", pooled=emb.pooled), seed=0)
    with pytest.raises(WeightsError, match="not a trained diffusion folder"):
        ShapesDiffusion(weights=str(tmp_path))
    (tmp_path / "sd").mkdir()
    (tmp_path / "sd" / "model_index.json").write_text("{}")
    with pytest.raises(WeightsError, match="diffusers pipeline folder: use the stable-diffusion component"):
        ShapesDiffusion(weights=str(tmp_path / "sd"))
    # an install that lacks the shipped weights says how to get a model
    monkeypatch.setattr(ShapesDiffusion, "default_weights", tmp_path / "missing")
    with pytest.raises(WeightsError, match="loom train diffusion"):
        ShapesDiffusion(steps=1).load()


def test_a_latent_folder_without_its_autoencoder_is_refused(tmp_path):
    from loom.plugins.diffusion import ShapesDiffusion

    folder = tiny_shapes_folder(tmp_path, autoencoder=TINY_AUTOENCODER)
    (tmp_path / "shapes-diffusion" / "autoencoder.safetensors").unlink()
    with pytest.raises(WeightsError, match="no autoencoder.safetensors.*copy the whole trained folder"):
        ShapesDiffusion(weights=folder, steps=1).load()


def test_train_diffusion_is_found_by_family():
    from loom.plugins.diffusion.training import DiffusionTrainer
    from loom.training import trainer_class

    assert trainer_class("diffusion") is DiffusionTrainer
    assert DiffusionTrainer.family == "diffusion" and DiffusionTrainer.image_size == 64


@pytest.mark.slow
def test_a_few_steps_lower_the_loss_and_write_a_folder_that_generates(tmp_path):
    seen = []
    out = loom.train(
        "diffusion",
        steps=60,
        seed=3,
        out=tmp_path / "diffusion",
        checkpoint_every=25,
        pool=96,
        options=TINY_OPTIONS,
        progress=False,
        on_step=lambda step, losses: seen.append(dict(losses)),
    )
    config = json.loads((out / "config.json").read_text())
    training = config["training"]
    assert config["family"] == "diffusion" and training["steps"] == 60
    # the first half trains the autoencoder, the second the UNet on its frozen latents
    assert [next(iter(s)) for s in seen] == ["ae_l1"] * 30 + ["loss"] * 30
    ae = [s["ae_l1"] for s in seen[:30]]
    assert sum(ae[-5:]) < sum(ae[:5]), ae
    assert training["final_loss"] < training["first_loss"], training
    assert {"shift", "scale"} <= config["autoencoder"].keys() and (out / "autoencoder.safetensors").is_file()
    result = loom.generate("a red circle on a blue background", seed=0, generator=str(out), size=None, progress=False)
    assert result.output.pixels.shape == (1, 3, 64, 64)
    step = result.provenance["spec"]["steps"][-1]  # after the prompt completion and the text encoder
    assert step["component"] == "diffusion" and step["config"]["weights"] == str(out.resolve())


@pytest.mark.slow
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path):
    # stopped at the end of the autoencoder's phase: the resumed run freezes it and starts the UNet
    tiny = dict(pool=96, options=TINY_OPTIONS, progress=False)
    whole = loom.train("diffusion", steps=6, out=tmp_path / "whole", **tiny)

    part = loom.train("diffusion", steps=6, out=tmp_path / "part", on_step=ctrl_c_at(3), **tiny)
    assert json.loads((part / "checkpoint" / "progress.json").read_text())["step"] == 3
    loom.train("diffusion", resume=part, progress=False)
    a, b = load_file(whole / "checkpoint" / "state.safetensors"), load_file(part / "checkpoint" / "state.safetensors")
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"resumed run differs from the uninterrupted one in {len(differ)} of {len(a)} tensors"
    for name in ("model.safetensors", "autoencoder.safetensors"):
        assert (whole / name).read_bytes() == (part / name).read_bytes(), name


def test_registry_lists_the_diffusion_components():
    registry = discover(env={"LOOM_PLUGINS": "diffusion"})
    assert registry.plugins["diffusion"].ok, registry.plugins["diffusion"].errors
    assert registry.plugins["diffusion"].components == [
        "stable-diffusion",
        "sd-text-encoder",
        "sd-denoiser",
        "sd-vae-decode",
        "sd-vae-encode",
        "sd-controlnet",
        "diffusion",
        "diffusion-fast",
    ]
    kinds = {e.name: (e.cls.input_type.kind, e.cls.output_type.kind) for e in registry.components()}
    assert kinds["sd-denoiser"] == ("Embedding", "Latent") and kinds["sd-vae-decode"] == ("Latent", "Image")
    # the three stages chain Text -> Embedding -> Latent -> Image, as the one-step generator does
    assert kinds["sd-text-encoder"] == ("Text", "Embedding") and kinds["stable-diffusion"] == ("Text", "Image")
    # each name resolves to the plugin's own class, recorded as the diffusion plugin's
    from loom.plugins import diffusion

    classes = {"stable-diffusion": diffusion.StableDiffusion, "sd-text-encoder": diffusion.SDTextEncoder}
    classes |= {"sd-denoiser": diffusion.SDDenoiser, "sd-vae-decode": diffusion.SDVAEDecode}
    classes |= {"diffusion": diffusion.ShapesDiffusion, "diffusion-fast": diffusion.FastShapesDiffusion}
    for name, cls in classes.items():
        entry = registry.get(name)
        assert entry.cls is cls and entry.plugin == "diffusion", (name, entry)


def test_a_one_width_autoencoder_is_refused_before_training(tmp_path):
    with pytest.raises(InputError, match="(?s)autoencoder_channels.*at least two widths"):
        loom.train("diffusion", steps=1, out=tmp_path / "bad", options={"autoencoder_channels": [8]}, progress=False)
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_init_from_a_trained_latent_model_trains_only_its_unet(tmp_path):
    source = loom.train("diffusion", steps=4, out=tmp_path / "source", pool=96, options=TINY_OPTIONS, progress=False)
    with pytest.raises(InputError, match="autoencoder_share=0"):
        loom.train(
            "diffusion", steps=2, out=tmp_path / "again", init=source, pool=96, options=TINY_OPTIONS, progress=False
        )
    assert not (tmp_path / "again").exists()  # refused before anything was written
    seen = []
    tuned = loom.train(
        "diffusion",
        steps=2,
        out=tmp_path / "tuned",
        init=source,
        pool=96,
        progress=False,
        options={**TINY_OPTIONS, "autoencoder_share": 0.0},
        on_step=lambda step, losses: seen.append(dict(losses)),
    )
    assert [next(iter(s)) for s in seen] == ["loss", "loss"]
    # the frozen autoencoder and its latent statistics come along unchanged
    assert (tuned / "autoencoder.safetensors").read_bytes() == (source / "autoencoder.safetensors").read_bytes()
    config, before = (json.loads((f / "config.json").read_text())["autoencoder"] for f in (tuned, source))
    assert config == before


@pytest.mark.slow
def test_init_from_a_trained_folder_without_its_checkpoint_loads_its_weights(tmp_path):
    import shutil

    source = loom.train(
        "diffusion",
        steps=4,
        out=tmp_path / "source",
        pool=96,
        options=TINY_OPTIONS,
        progress=False,
        command="loom train diffusion first",
    )
    # what ships: the generator's files, no checkpoint/ (so no optimiser state)
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    for name in ("config.json", "model.safetensors", "autoencoder.safetensors"):
        shutil.copy(source / name, shipped / name)
    # lr ~0: the exported weights show where the run started
    tuned = loom.train(
        "diffusion",
        steps=1,
        out=tmp_path / "tuned",
        init=shipped,
        pool=96,
        progress=False,
        options={**TINY_OPTIONS, "autoencoder_share": 0.0, "lr": 1e-12},
    )
    for name in ("model.safetensors", "autoencoder.safetensors"):
        # values, not bytes: a zero weight nudged by 1e-12 exports as float16 -0.0
        a, b = load_file(source / name), load_file(tuned / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert (
        json.loads((tuned / "config.json").read_text())["autoencoder"]
        == json.loads((source / "config.json").read_text())["autoencoder"]
    )
    chain = json.loads((tuned / "config.json").read_text())["training"]["init_from"]
    assert chain["weights_only"] is True and chain["command"] == "loom train diffusion first" and chain["step"] == 4
    with pytest.raises(InputError, match="does not fit these options"):
        loom.train(
            "diffusion",
            steps=1,
            out=tmp_path / "wider",
            init=shipped,
            pool=96,
            progress=False,
            options={**TINY_OPTIONS, "autoencoder_share": 0.0, "channels": [16, 16]},
        )
    assert not (tmp_path / "wider").exists()


@pytest.mark.slow
def test_unet_init_starts_a_new_autoencoder_run_from_a_trained_unet(tmp_path):
    import shutil

    source = loom.train("diffusion", steps=2, out=tmp_path / "source", pool=96, options=TINY_OPTIONS, progress=False)
    # another autoencoder (wider, so its weights cannot come from the source), the source's UNet;
    # lr ~0: the exported UNet shows where the run started
    options = {**TINY_OPTIONS, "autoencoder_channels": [8, 16, 16], "lr": 1e-12, "unet_init": str(source)}
    new = loom.train("diffusion", steps=2, out=tmp_path / "new", pool=96, options=options, progress=False)
    a, b = load_file(source / "model.safetensors"), load_file(new / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    config = json.loads((new / "config.json").read_text())
    assert config["autoencoder"]["block_out_channels"] == [8, 16, 16]
    # the record says how that UNet was made, as the folder may be overwritten later
    assert config["training"]["unet_from"]["folder"] == str(source) and config["training"]["unet_from"]["steps"] == 2
    # a run started from it keeps that with its start (from the checkpoint or from the exported
    # files alone), not as its own: its UNet came from the start
    shutil.copytree(new, tmp_path / "copied", ignore=shutil.ignore_patterns("checkpoint"))
    for start in (new, tmp_path / "copied"):
        onward = loom.train(
            "diffusion",
            steps=1,
            out=tmp_path / f"onward-{start.name}",
            init=start,
            pool=96,
            progress=False,
            options={**TINY_OPTIONS, "autoencoder_channels": [8, 16, 16], "autoencoder_share": 0.0},
        )
        record = json.loads((onward / "config.json").read_text())["training"]
        assert "unet_from" not in record and record["init_from"]["unet_from"] == config["training"]["unet_from"], start
    # it also wins over the UNet of an --init run (one trained on its own), and a UNet that does not
    # fit is refused before any writing
    other = loom.train(
        "diffusion",
        steps=2,
        seed=5,
        out=tmp_path / "other",
        pool=96,
        progress=False,
        options={**TINY_OPTIONS, "autoencoder_channels": [8, 16, 16]},
    )
    assert not all(torch.equal(a[k], v) for k, v in load_file(other / "model.safetensors").items())
    again = loom.train(
        "diffusion",
        steps=1,
        out=tmp_path / "again",
        init=other,
        pool=96,
        progress=False,
        options={**options, "autoencoder_share": 0.0},
    )
    c = load_file(again / "model.safetensors")
    assert all(torch.equal(a[k], c[k]) for k in a)
    with pytest.raises(InputError, match="unet_init.*does not fit"):
        loom.train(
            "diffusion",
            steps=1,
            out=tmp_path / "wide",
            pool=96,
            progress=False,
            options={**options, "channels": [16, 16]},
        )
    with pytest.raises(InputError, match="not a trained diffusion model folder"):
        loom.train(
            "diffusion",
            steps=1,
            out=tmp_path / "none",
            pool=96,
            progress=False,
            options={**options, "unet_init": str(tmp_path / "missing")},
        )
    assert not (tmp_path / "wide").exists() and not (tmp_path / "none").exists()
