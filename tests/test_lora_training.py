"""``loom train lora`` (issue 34, part 2): a LoRA adapter of a Shapes diffusion model trained on the
shared workflow (checkpoints, resume, samples), on a tiny random-weight base and a few images, a few
steps only. The adapter is what ``adapters: [{path: FOLDER}]`` loads (tests/test_adapters.py)."""

import json

import pytest
import torch
from click.testing import CliRunner
from fakes import captioned_renders, ctrl_c_at, tiny_shapes_diffusion
from safetensors.torch import load_file

import loom
from loom.cli import main
from loom.core import InputError


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tiny_shapes_diffusion(tmp_path_factory.mktemp("lora-base") / "base")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Four captioned renders, as a user's folder."""
    return captioned_renders(tmp_path_factory.mktemp("lora-data"))


def train(out, base, images, steps=3, on_step=None, **options):
    return loom.train(
        "lora",
        images,
        steps=steps,
        out=out,
        seed=1,
        on_step=on_step,
        # one denoising step for the sample grid: the workflow draws it at every checkpoint
        options={"base": base, "rank": 2, "batch_size": 2, "sample_steps": 1, **options},
        progress=False,
    )


@pytest.mark.slow
def test_a_few_steps_write_an_adapter_in_the_diffusers_layout_and_resume_where_they_stopped(tmp_path, base, images):
    folder = train(tmp_path / "lora", base, images, on_step=ctrl_c_at(2))  # Ctrl-C after step 2 of 3
    assert json.loads((folder / "checkpoint" / "progress.json").read_text())["step"] == 2
    weights = load_file(str(folder / "adapter.safetensors"))
    assert weights and all(k.startswith("unet.") and (".lora_A." in k or ".lora_B." in k) for k in weights)
    ups = [v for k, v in weights.items() if ".lora_B." in k]
    assert all(v.shape[1] == 2 for v in ups)  # rank 2
    assert any(v.abs().max() > 0 for v in ups), "lora_B starts at zero: training moved it"
    config = json.loads((folder / "config.json").read_text())
    assert config["family"] == "lora" and config["adapter"]["base"] == base and config["adapter"]["rank"] == 2
    assert (folder / "samples.png").is_file() and (folder / "loss.png").is_file()
    # two steps, Ctrl-C, then the last on resume equal three in one go, bit for bit
    loom.train("lora", resume=folder, progress=False)
    straight = train(tmp_path / "straight", base, images)
    resumed, whole = load_file(str(folder / "adapter.safetensors")), load_file(str(straight / "adapter.safetensors"))
    assert resumed.keys() == whole.keys()
    differ = [k for k in whole if not torch.equal(resumed[k], whole[k])]
    assert not differ, differ


def test_what_cannot_have_an_adapter_is_refused_in_one_line(tmp_path, images):
    with pytest.raises(InputError, match="no adapter can be trained for it .adapters train for: diffusion"):
        loom.train("lora", images, steps=1, out=tmp_path / "a", options={"base": "vae"}, progress=False)
    with pytest.raises(InputError, match="is a folder but holds no config.json: it is not a trained Loom generator"):
        loom.train("lora", images, steps=1, out=tmp_path / "b", options={"base": str(tmp_path)}, progress=False)
    res = CliRunner().invoke(main, ["train", "vae", "--rank", "4", "--steps", "1", "--out", str(tmp_path / "c")])
    assert res.exit_code != 0 and "--rank is for `loom train lora`" in res.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


DECODER_TARGETS = ["conv1", "conv2", "conv_out"]


@pytest.mark.slow
def test_an_adapter_of_the_decoder_too_resumes_bit_for_bit_and_loads_into_both_parts(tmp_path, base, images):
    from loom.plugins.diffusion import ShapesDiffusion

    options = {"decoder_targets": DECODER_TARGETS}
    folder = train(tmp_path / "lora", base, images, on_step=ctrl_c_at(2), **options)
    loom.train("lora", resume=folder, progress=False)
    straight = train(tmp_path / "straight", base, images, **options)
    resumed, whole = load_file(str(folder / "adapter.safetensors")), load_file(str(straight / "adapter.safetensors"))
    decoder = [k for k in whole if k.startswith("decoder.")]
    assert decoder and all(any(f".{t}.lora_" in k for t in DECODER_TARGETS) for k in decoder)
    assert resumed.keys() == whole.keys() and all(torch.equal(resumed[k], whole[k]) for k in whole)
    config = json.loads((folder / "config.json").read_text())
    assert config["adapter"]["decoder_targets"] == DECODER_TARGETS
    # the decoder part changes what the model draws, and at scale 0 nothing changes
    embeddings = __import__("fakes").random_embeddings(2)

    def drawn(*adapters):
        step = ShapesDiffusion(weights=base, steps=2, guidance_scale=1.0, adapters=list(adapters))
        return step(embeddings, seed=[1, 2]).pixels

    plain = drawn()
    assert torch.equal(drawn({"path": str(folder), "scale": 0.0}), plain)
    decoder_only = tmp_path / "decoder-only.safetensors"
    from safetensors.torch import save_file

    save_file({k: v for k, v in whole.items() if k.startswith("decoder.")}, str(decoder_only))
    assert (drawn({"path": str(decoder_only), "scale": 1.0}) - plain).abs().max() > 1e-4


def test_decoder_targets_the_decoder_lacks_are_refused(tmp_path, base, images):
    with pytest.raises(InputError, match="decoder_targets .'no_such_layer'.: "):
        train(tmp_path / "x", base, images, steps=1, decoder_targets=["no_such_layer"])
