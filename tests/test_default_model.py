"""The shipped default chain: text encoder → trained VAE → resize, end to end."""

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image as PILImage

import loom
from loom.cli import main
from loom.core import InputError, ProvenanceError
from loom.outputs import read_record

pytestmark = pytest.mark.slow

PROMPTS = [
    "a small red circle in the top left on a blue background",
    "a large green square in the center on a white background",
    "on a black background, a large yellow triangle in the bottom right",
    "a red circle on a blue background",
    "small purple square, top right corner, gray background",
    "a large white circle in the bottom left and a small orange square in the top right on a green background",
    "a blue background with a small yellow triangle at the top",
    "a large orange circle on the left on a purple background",
]


@pytest.fixture(scope="module")
def pipeline():
    return loom.pipeline_for(loom.default_spec())


def test_same_prompt_and_seed_same_pixels_alone_or_in_a_batch_of_8(pipeline):
    seeds = [41 + i for i in range(8)]
    batch = pipeline.run(PROMPTS, seeds, progress=False).output.to_numpy()
    assert batch.shape == (8, 256, 256, 3)
    for i in range(8):
        alone = pipeline.run(PROMPTS[i], [seeds[i]], progress=False).output.to_numpy()[0]
        assert np.array_equal(alone, batch[i]), f"item {i} differs alone vs in a batch of 8"
    three = pipeline.run(PROMPTS[2:5], seeds[2:5], progress=False).output.to_numpy()
    assert np.array_equal(three, batch[2:5])
    other_seed = pipeline.run(PROMPTS[0], [999], progress=False).output.to_numpy()[0]
    assert not np.array_equal(other_seed, batch[0])


def test_png_provenance_round_trip_via_reproduce(tmp_path):
    runner = CliRunner()
    out, again = tmp_path / "out.png", tmp_path / "again.png"
    res = runner.invoke(main, ["generate", PROMPTS[0], "-o", str(out), "--seed", "7", "-q"])
    assert res.exit_code == 0, res.output
    record = read_record(out)
    assert record["inputs"] == [PROMPTS[0]] and record["seeds"] == [7]
    assert [s["component"] for s in record["spec"]["steps"]] == [
        "complete-shapes-prompt",
        "text-encoder:text-encoder",
        "vae",
        "image-postprocessors:resize",
    ]
    assert {c["plugin"] for c in record["components"]} == {
        "prompt-completion",
        "text-encoder",
        "vae",
        "image-postprocessors",
    }
    assert record["timings"]["steps_s"] and record["loom_version"]
    res = runner.invoke(main, ["reproduce", str(out), "-o", str(again), "-q"])
    assert res.exit_code == 0, res.output
    a, b = np.asarray(PILImage.open(out)), np.asarray(PILImage.open(again))
    assert a.shape == (256, 256, 3) and np.array_equal(a, b)


def test_generate_count_writes_one_file_per_seed(tmp_path):
    res = CliRunner().invoke(
        main, ["generate", PROMPTS[1], "-o", str(tmp_path / "img.png"), "--seed", "3", "-n", "3", "-q", "--size", "64"]
    )
    assert res.exit_code == 0, res.output
    files = sorted(tmp_path.glob("img-*.png"))
    assert [f.name for f in files] == ["img-1.png", "img-2.png", "img-3.png"]
    assert [read_record(f)["seeds"] for f in files] == [[3], [4], [5]]
    assert PILImage.open(files[0]).size == (64, 64)


def test_cli_errors_are_one_clear_line(tmp_path):
    runner = CliRunner()
    plain = tmp_path / "plain.png"
    PILImage.new("RGB", (4, 4)).save(plain)
    res = runner.invoke(main, ["reproduce", str(plain), "-o", str(tmp_path / "x.png")])
    assert res.exit_code == 1 and "carries no Loom provenance record" in res.output
    res = runner.invoke(main, ["generate", "a red circle", "-o", str(tmp_path / "x.jpg"), "-q"])
    assert res.exit_code == 1 and "use a name ending in .png" in res.output
    res = runner.invoke(main, ["generate", "a red circle", "-o", str(tmp_path / "x.png"), "--generator", "nope", "-q"])
    assert res.exit_code == 1 and "no component named 'nope'" in res.output
    res = runner.invoke(
        main, ["generate", "a red circle", "-o", str(tmp_path / "x.png"), "--generator", str(tmp_path), "-q"]
    )
    assert res.exit_code == 1 and "holds no config.json" in res.output
    assert not list(tmp_path.glob("x*")) and not list(tmp_path.glob(".*tmp"))


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    result = loom.generate(PROMPTS[0], seed=1, size=64, progress=False)
    target = tmp_path / "out.png"

    def broken_save(self, *args, **kwargs):
        with open(args[0], "wb") as f:
            f.write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(PILImage.Image, "save", broken_save)
    with pytest.raises(InputError, match="out.png.*disk full"):
        loom.save(result, target)
    assert list(tmp_path.iterdir()) == []


def test_wrong_encoder_embeddings_are_refused():
    from loom.chains import Pipeline

    with pytest.raises(InputError, match="trained on embeddings from 'all-MiniLM-L6-v2'"):
        spec = {"steps": [{"component": "text-encoder", "config": {"model": "all-MiniLM-L6-v2"}}, {"component": "vae"}]}
        p = Pipeline.from_spec(spec)
        p.components[0].run = lambda inputs, gens, _run=p.components[0].run: _relabel(_run(inputs, gens))
        p.run("a red circle", seed=0, progress=False)


def _relabel(emb):
    emb.encoder = "some-other-encoder"
    return emb


def test_reproduce_needs_a_record(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        loom.reproduce(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(ProvenanceError, match="not an image"):
        loom.reproduce(tmp_path / "junk.png")


def test_an_attention_mask_for_the_padding_gives_what_a_key_padding_mask_gives():
    import torch

    from loom.plugins.common.nn import padding_mask

    torch.manual_seed(0)
    attention = torch.nn.MultiheadAttention(16, num_heads=4, batch_first=True)
    q, kv = torch.randn(3, 5, 16), torch.randn(3, 7, 16)
    pad = torch.tensor([[False] * 7, [False] * 4 + [True] * 3, [False] + [True] * 6])
    ours, _ = attention(q, kv, kv, attn_mask=padding_mask(pad, 5, 4), need_weights=False)
    theirs, _ = attention(q, kv, kv, key_padding_mask=pad, need_weights=False)
    assert torch.equal(ours, theirs)
    # and the padding matters: without it the outputs differ
    assert not torch.allclose(ours, attention(q, kv, kv, need_weights=False)[0])
