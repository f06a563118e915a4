"""Records are data, not instructions (issue 32): `loom reproduce` and a prompts file's `params`
may name no hub id (unless --allow-download), no spec path, no weights other than the recorded
digests, no more outputs than the items limit; `reproduce --check` compares with the source file;
records of any size round-trip in PNG, WAV and FLAC, and `loom batch` skips an item with one."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import fakes
import numpy as np
import pytest
import soundfile
import torch
from click.testing import CliRunner
from PIL import Image as PILImage
from pydantic import Field

import loom
import loom.api
import loom.core.plugins
import loom.limits
from loom.batch_jobs import batch
from loom.cli import main
from loom.core import (
    Audio,
    Capabilities,
    ComponentConfig,
    Embedding,
    Encoder,
    Generator,
    Image,
    ProvenanceError,
    Text,
    WeightsError,
    hookimpl,
)
from loom.outputs import open_png, read_record, save_audio, save_png, write

#: Hub ids the fake hub encoder was asked to fetch.
FETCHED: list[str] = []


class HubEncoder(Encoder):
    """Stands for a transformers encoder: ``model`` is a local folder or a hub id, fetched only
    with ``download: true`` (it never leaves the machine: it only notes what it was asked)."""

    class Config(ComponentConfig):
        model: str = "local-default"
        download: bool = False

    input_type, output_type = Text, Embedding

    def setup(self):
        if "/" in self.config.model and not Path(self.config.model).exists():
            if not self.config.download:
                raise WeightsError(f"hub id {self.config.model!r} is not cached (download: false)")
            FETCHED.append(self.config.model)

    def run(self, inputs, generators):
        tokens = torch.tensor([[[len(s) % 7 / 7.0] * 4] for s in inputs.items])
        return Embedding(tokens=tokens, mask=torch.ones(len(inputs), 1), encoder="hub", pooled=tokens[:, 0])


class FolderNoise(Generator):
    """A trained-folder generator: its ``weights`` folder holds model.safetensors, whose bytes
    shift the noise (so other weights give other pixels)."""

    capabilities = Capabilities(has_weights=True, weights_option="weights")

    class Config(ComponentConfig):
        weights: str | None = None
        note: str = Field("", description="free text, to make a record large")

    input_type, output_type = Embedding, Image

    def setup(self):
        self.shift = (Path(self.config.weights) / "model.safetensors").read_bytes()[0] / 255.0

    def run(self, inputs, generators):
        noise = torch.stack([torch.rand(3, 6, 6, generator=g) for g in generators])
        return Image(((noise + self.shift) / 2).clamp(0, 1))


class Tone(Generator):
    input_type, output_type = Text, Audio

    def run(self, inputs, generators):
        return Audio(torch.stack([torch.rand(1, 400, generator=g) - 0.5 for g in generators]), 8000)


@hookimpl
def loom_register_components(register):
    register("hub-encoder", HubEncoder)
    register("folder-noise", FolderNoise)
    register("tone", Tone)


@pytest.fixture
def registry(monkeypatch):
    FETCHED.clear()
    registry = fakes.fake_registry()
    registry.add_plugin(sys.modules[__name__], "records-safety", "records-safety", "1.0")
    monkeypatch.setattr(loom.core.plugins, "_registry", registry)
    monkeypatch.setattr(loom.api, "_pipelines", {})
    yield registry
    loom.limits.configure()


def make_png(tmp_path, steps=None, name="made.png", prompt="a red circle") -> Path:
    steps = steps or [{"component": "hash-encoder"}, {"component": "noise"}]
    pipeline = loom.Pipeline.from_spec({"steps": steps})
    return loom.save(pipeline.run(prompt, 3, progress=False), tmp_path / name)[0]


def rewrite_record(path: Path, change) -> dict:
    """Hand-edit the record embedded in the PNG at ``path`` (pixels kept) with the PNG writer."""
    record = read_record(path)
    change(record)
    with open_png(path) as im:
        save_png(im.copy(), path, record)
    return record


def reproduce(*args):
    return CliRunner().invoke(main, ["reproduce", *map(str, args), "-q"])


# ------------------------------------------------------------------ what a record may name


def test_a_record_naming_a_hub_id_is_refused_unless_downloads_are_allowed(registry, tmp_path):
    made = make_png(tmp_path, [{"component": "hub-encoder"}, {"component": "noise"}])
    rewrite_record(made, lambda r: r["spec"]["steps"][0]["config"].update(model="someone/some-model"))
    res = reproduce(made, "-o", tmp_path / "again.png")
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "'someone/some-model'" in res.output and "--allow-download" in res.output
    assert str(made) in res.output and not (tmp_path / "again.png").exists() and FETCHED == []
    res = reproduce(made, "-o", tmp_path / "again.png", "--allow-download")
    assert res.exit_code == 0, res.output
    assert FETCHED == ["someone/some-model"] and (tmp_path / "again.png").is_file()


def test_a_record_asking_for_download_is_refused(registry, tmp_path):
    made = make_png(tmp_path, [{"component": "hub-encoder"}, {"component": "noise"}])
    rewrite_record(made, lambda r: r["spec"]["steps"][0]["config"].update(download=True))
    res = reproduce(made, "-o", tmp_path / "again.png")
    assert res.exit_code == 1 and "option 'download' is true" in res.output and "step 1" in res.output
    assert not (tmp_path / "again.png").exists()


def test_a_record_whose_spec_is_a_path_is_refused_and_the_path_never_read(registry, tmp_path, monkeypatch):
    made = make_png(tmp_path)
    spec_file = tmp_path / "chain.yaml"
    spec_file.write_text("steps:\n  - component: hash-encoder\n  - component: noise\n")
    rewrite_record(made, lambda r: r.update(spec=str(spec_file)))
    opened = []
    real_read_text = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: opened.append(self) or real_read_text(self, *a, **k))
    res = reproduce(made, "-o", tmp_path / "again.png")
    assert res.exit_code == 1 and str(made) in res.output
    assert "its spec is a str, not a mapping of steps" in res.output
    assert spec_file not in opened and not (tmp_path / "again.png").exists()


def test_a_record_asking_for_too_many_outputs_is_refused_by_the_items_limit(registry, tmp_path):
    made = make_png(tmp_path)
    rewrite_record(made, lambda r: r.update(inputs=["a"] * 1_000_001, seeds=list(range(1_000_001))))
    fakes.LOADED.clear()
    res = reproduce(made, "-o", tmp_path / "again.png")
    assert res.exit_code == 1 and "1,000,001" in res.output and "LOOM_LIMIT_ITEMS" in res.output
    assert str(made) in res.output and not (tmp_path / "again-1.png").exists()
    assert fakes.LOADED == []


def test_prompts_file_params_naming_a_hub_id_fail_that_item_only(registry, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    lines = [
        {"prompt": "a red circle", "id": "plain"},
        {"prompt": "a red circle", "id": "hub", "params": {"hub-encoder": {"model": "someone/some-model"}}},
        {"prompt": "a red circle", "id": "fetch", "params": {"hub-encoder": {"download": True}}},
    ]
    prompts.write_text("\n".join(json.dumps(x) for x in lines))
    chain = {"steps": [{"component": "hub-encoder"}, {"component": "noise"}]}
    report = batch(chain, prompts, tmp_path / "out", progress=False)
    rows = {r["id"]: r for r in report.rows}
    assert rows["plain"]["status"] == "ok"
    assert rows["hub"]["status"] == "failed" and "'someone/some-model'" in rows["hub"]["error"]
    assert rows["fetch"]["status"] == "failed" and "'download' is true" in rows["fetch"]["error"]
    assert FETCHED == [] and sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["plain.png"]


# ------------------------------------------------------------------ weights digests


def trained_folder(path: Path, first_byte: int) -> Path:
    path.mkdir(exist_ok=True)
    (path / "model.safetensors").write_bytes(bytes([first_byte]) + b"weights")
    (path / "config.json").write_text('{"family": "folder-noise"}')
    return path


def test_reproduce_refuses_weights_that_changed_since_the_record(registry, tmp_path):
    folder = trained_folder(tmp_path / "trained", 10)
    made = make_png(
        tmp_path, [{"component": "hash-encoder"}, {"component": "folder-noise", "config": {"weights": str(folder)}}]
    )
    weights = read_record(made)["components"][1]["weights"]
    assert set(weights) == {"config.json", "model.safetensors"} and len(weights["model.safetensors"]) == 64
    res = reproduce(made, "-o", tmp_path / "same.png", "--check")
    assert res.exit_code == 0, res.output
    trained_folder(folder, 200)  # other weights under the same name
    loom.api._pipelines.clear()
    res = reproduce(made, "-o", tmp_path / "again.png")
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "step 2 ('folder-noise')" in res.output and str(folder / "model.safetensors") in res.output
    assert "not the one the record was made with" in res.output and not (tmp_path / "again.png").exists()
    (folder / "extra.safetensors").write_bytes(b"more")
    trained_folder(folder, 10)
    res = reproduce(made, "-o", tmp_path / "again.png")
    assert res.exit_code == 1 and "extra.safetensors" in res.output


def test_packaged_default_weights_are_hashed_too(registry, tmp_path, monkeypatch):
    folder = trained_folder(tmp_path / "packaged", 10)
    monkeypatch.setattr(FolderNoise, "default_weights", folder, raising=False)
    monkeypatch.setattr(FolderNoise, "setup", lambda self: setattr(self, "shift", 0.0))
    made = make_png(tmp_path, [{"component": "hash-encoder"}, {"component": "folder-noise"}])
    assert "model.safetensors" in read_record(made)["components"][1]["weights"]
    assert "weights" not in read_record(made)["components"][0]  # a step without a weights folder
    trained_folder(folder, 11)
    res = reproduce(made, "-o", tmp_path / "again.png")
    assert res.exit_code == 1 and str(folder / "model.safetensors") in res.output


# ------------------------------------------------------------------ reproduce --check


def test_check_passes_on_an_untouched_file_and_fails_on_edited_pixels(registry, tmp_path):
    made = make_png(tmp_path)
    res = reproduce(made, "-o", tmp_path / "again.png", "--check")
    assert res.exit_code == 0, res.output
    assert f"same pixels as {made}" in res.output
    with PILImage.open(made) as im:
        pixels = np.asarray(im).copy()
    value = int(pixels[0, 0, 0])
    pixels[0, 0, 0] = value + 40 if value < 200 else value - 40
    edited = tmp_path / "edited.png"
    save_png(PILImage.fromarray(pixels), edited, read_record(made))  # the record kept, the pixels not
    res = reproduce(edited, "-o", tmp_path / "again2.png", "--check")
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert f"differs from {str(edited)!r}: max diff 40 in its pixels" in res.output
    with pytest.raises(ProvenanceError, match="max diff 40"):
        loom.reproduce(edited, progress=False, check=True)


def test_check_compares_samples_of_a_sound(registry, tmp_path):
    pipeline = loom.Pipeline.from_spec({"steps": [{"component": "tone"}]})
    made = loom.save(pipeline.run("a beep", 5, progress=False), tmp_path / "made.flac")[0]
    res = reproduce(made, "-o", tmp_path / "again.flac", "--check")
    assert res.exit_code == 0 and f"same samples as {made}" in res.output, res.output
    data, rate = soundfile.read(made, dtype="int16", always_2d=True)
    data[10, 0] += 7 if data[10, 0] < 30000 else -7
    edited = save_audio(data, rate, tmp_path / "edited.wav", read_record(made))  # the record kept, one sample not
    res = reproduce(edited, "-o", tmp_path / "again.wav", "--check")
    assert res.exit_code == 1 and "max diff 7 in its samples" in res.output


# ------------------------------------------------------------------ records of any size


@pytest.mark.parametrize("suffix", [".png", ".wav", ".flac"])
def test_records_over_a_mebibyte_round_trip(tmp_path, suffix):
    import random

    rng = random.Random(0)  # text that compresses poorly, as a real prompt list might
    record = {"loom_record": 1, "inputs": ["".join(rng.choices("abcdefghij klmnop", k=2_500_000))], "u": "ü"}
    data = Image(torch.rand(1, 3, 4, 4)) if suffix == ".png" else Audio(torch.zeros(1, 1, 50), 8000)
    path = write(data, 0, tmp_path / f"big{suffix}", record)
    assert read_record(path) == record
    if suffix == ".png":
        with open_png(path) as im:  # Pillow alone refuses text over 1 MiB
            im.load()
    loom.limits.configure(record_bytes=1_000_000)
    try:
        with pytest.raises(loom.limits.LimitError, match="LOOM_LIMIT_RECORD_BYTES") as err:
            read_record(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
        with pytest.raises(loom.limits.LimitError):
            write(data, 0, tmp_path / f"refused{suffix}", record)
        assert not (tmp_path / f"refused{suffix}").exists()
    finally:
        loom.limits.configure()


def test_batch_rerun_skips_an_item_whose_record_is_large(registry, tmp_path):
    folder = trained_folder(tmp_path / "trained", 10)
    note = "n" * 1_500_000
    chain = {
        "steps": [
            {"component": "hash-encoder"},
            {"component": "folder-noise", "config": {"weights": str(folder), "note": note}},
        ]
    }
    first = batch(chain, ["a red circle", "a blue square"], tmp_path / "out", progress=False)
    assert (first.made, first.failed) == (2, 0)
    record = read_record(tmp_path / "out" / "000001.png")
    assert len(json.dumps(record)) > 1024 * 1024
    again = batch(chain, ["a red circle", "a blue square"], tmp_path / "out", progress=False)
    assert (again.made, again.skipped, again.failed) == (0, 2, 0)


# ------------------------------------------------------------------ the text encoder's hub guard


def test_text_encoder_never_contacts_the_hub_for_a_hub_id_without_download(monkeypatch):
    import socket

    import huggingface_hub.constants

    from loom.plugins.text_encoder import TextEncoder

    connects = []

    def no_network(self, address, *args):
        connects.append(address)
        raise OSError("network is off in tests")

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(WeightsError) as err:
        TextEncoder(model="someone/no-such-model-xyz").load()
    assert connects == [], "the hub was contacted"
    text = str(err.value)
    assert "'someone/no-such-model-xyz'" in text and "download: false, so nothing was downloaded" in text
    assert "set download: true" in text
