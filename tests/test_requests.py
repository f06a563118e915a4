"""Requests with more than one input (issue 33, parts 1 and 2): steps that take an image and a mask, checked before
anything loads; image files of every mode read by one rule and refused by name when unreadable or too large; records
that keep each given image's digest, so that `loom reproduce --image --mask` gives the same pixels or names the file
that changed; `loom batch` lines with their own images."""

from __future__ import annotations

import json
import struct
import time
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image as PILImage
from pydantic import Field

import loom
import loom.api
import loom.core.plugins
from loom.cli import main
from loom.core import ComponentConfig, Generator, Image, InputError, Pipeline, Registry, Text, hookimpl
from loom.outputs import read_image, read_record

#: Every setup() call, by class name: the checks below must come before any of them.
LOADED: list[str] = []


def _tone(prompts: Text) -> torch.Tensor:
    """One value per prompt, the same in every process."""
    return torch.tensor([zlib.crc32(s.encode()) % 97 / 97 for s in prompts.items]).view(-1, 1, 1, 1)


class Tint(Generator):
    """Edits its image towards noise by ``strength``; a mask, if given, keeps what lies outside it."""

    class Config(ComponentConfig):
        strength: float = Field(0.5, ge=0.0, le=1.0)

    input_type, output_type = Text, Image
    takes = {"image": Image, "mask": Image}
    optional = frozenset({"mask"})
    micro_batch = 2

    def setup(self):
        LOADED.append(type(self).__name__)

    def run(self, inputs, generators, image, mask=None):
        height, width = image.pixels.shape[-2:]
        noise = torch.stack([torch.rand(3, height, width, generator=g) for g in generators])
        s = self.config.strength
        edit = (1 - s) * image.pixels + s * (noise + _tone(inputs)) / 2
        if mask is not None:
            edit = mask.pixels * edit + (1 - mask.pixels) * image.pixels
        return Image(edit.clamp(0, 1))


class InpaintFake(Generator):
    """Repaints what its (required) mask marks white with the prompt's tone."""

    input_type, output_type = Text, Image
    takes = {"image": Image, "mask": Image}

    def setup(self):
        LOADED.append(type(self).__name__)

    def run(self, inputs, generators, image, mask):
        fill = _tone(inputs).expand_as(image.pixels)
        return Image(mask.pixels * fill + (1 - mask.pixels) * image.pixels)


class Plain(Generator):
    """Takes nothing but its prompt."""

    input_type, output_type = Text, Image

    def setup(self):
        LOADED.append(type(self).__name__)

    def run(self, inputs, generators):
        return Image(_tone(inputs).expand(len(inputs), 3, 8, 8).clone())


def editing_registry() -> Registry:
    from loom.plugins import image_postprocessors

    @hookimpl
    def loom_register_components(register):
        register("tint", Tint)
        register("inpaint-fake", InpaintFake)
        register("plain", Plain)

    registry = Registry()
    registry.add_plugin(SimpleNamespace(loom_register_components=loom_register_components), "editing", "editing")
    registry.add_plugin(image_postprocessors, "image-postprocessors", "loom", "0.1.0")
    return registry


@pytest.fixture
def registry(monkeypatch):
    LOADED.clear()
    registry = editing_registry()
    monkeypatch.setattr(loom.core.plugins, "_registry", registry)
    monkeypatch.setattr(loom.api, "_pipelines", {})
    return registry


def chain(registry, name: str, **config) -> Pipeline:
    return Pipeline.from_spec({"steps": [{"component": name, "config": config}]}, registry)


def picture(seed: int, size=(12, 16), items: int = 1) -> Image:
    return Image(torch.rand(items, 3, *size, generator=torch.Generator().manual_seed(seed)))


def write_png(path, array, mode=None):
    PILImage.fromarray(array, mode).save(path) if mode else PILImage.fromarray(array).save(path)
    return path


def rgb_file(path, seed=0, size=(12, 16)):
    return write_png(path, np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8))


def mask_file(path, size=(12, 16), box=(2, 2, 8, 8)):
    array = np.zeros(size, dtype=np.uint8)
    top, left, bottom, right = box
    array[top:bottom, left:right] = 255
    return write_png(path, array)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_error_line(res, *names):
    """The CLI failed with one `error:` line naming each of ``names``."""
    assert res.exit_code == 1, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert "Traceback" not in res.output
    for name in names:
        assert str(name) in lines[0], res.output
    return lines[0]


# ------------------------------------------------------------------ the engine


def test_a_chain_runs_with_one_image_for_all_items_or_one_per_item(registry):
    pipe = chain(registry, "tint", strength=0.5)
    prompts = ["a red circle", "a blue square", "a green star"]
    one = picture(1)
    broadcast = pipe.run(prompts, 7, image=one)
    repeated = pipe.run(prompts, 7, image=Image(one.pixels.repeat(3, 1, 1, 1)))
    assert torch.equal(broadcast.output.pixels, repeated.output.pixels)
    several = picture(2, items=3)
    per_item = pipe.run(prompts, 7, image=several)
    for i in range(3):  # each item is edited from its own image: half of it is that image
        noise = torch.rand(3, 12, 16, generator=torch.Generator().manual_seed(7 + i))
        want = (0.5 * several.pixels[i] + 0.5 * (noise + _tone(Text([prompts[i]]))[0]) / 2).clamp(0, 1)
        assert torch.allclose(per_item.output.pixels[i], want, atol=1e-6)
    assert pipe.takes == {"image": (Image, True), "mask": (Image, False)}


def test_an_item_alone_equals_the_same_item_inside_a_batch_with_its_inputs(registry):
    pipe = chain(registry, "inpaint-fake")
    prompts = ["a", "b", "c", "d", "e"]
    images, masks = picture(3, items=5), Image((picture(4, items=5).pixels > 0.5).float())
    whole = pipe.run(prompts, 11, image=images, mask=masks).output.pixels
    for i in range(5):
        alone = pipe.run([prompts[i]], [11 + i], image=images.take([i]), mask=masks.take([i])).output.pixels
        assert torch.equal(alone[0], whole[i])
    tint = chain(registry, "tint")
    whole = tint.run(prompts, 5, image=images).output.pixels  # micro-batch 2: chunks of 2, 2, 1 (padded)
    assert torch.equal(tint.run([prompts[4]], [9], image=images.take([4])).output.pixels[0], whole[4])


def test_a_missing_required_input_is_named_before_anything_loads(registry):
    pipe = chain(registry, "inpaint-fake")
    with pytest.raises(InputError) as err:
        pipe.run(["a"], 0, image=picture(1))
    assert str(err.value) == (
        "step 1 ('inpaint-fake') takes mask (Image), which this request does not give: pass mask=…"
    )
    with pytest.raises(InputError, match=r"step 1 \('tint'\) takes image \(Image\), which this request does not"):
        chain(registry, "tint").run(["a"], 0)
    assert LOADED == []


def test_an_input_no_step_takes_is_named(registry):
    with pytest.raises(InputError) as err:
        chain(registry, "plain").run(["a"], 0, mask=picture(1))
    assert str(err.value) == "no step of this chain takes 'mask'; its steps (+ the inputs they take): 'plain'"
    with pytest.raises(InputError, match=r"no step of this chain takes 'control'; its steps .* 'tint' \+image \+mask$"):
        chain(registry, "tint").run(["a"], 0, image=picture(1), control=picture(2))
    assert LOADED == []


def test_a_mistyped_or_miscounted_input_is_named(registry):
    pipe = chain(registry, "tint")
    with pytest.raises(
        InputError, match=r"step 1 \('tint'\) takes image \(Image\), but this request gives image as Text"
    ):
        pipe.run(["a"], 0, image=Text(["not a picture"]))
    with pytest.raises(InputError, match="image holds 2 items for 3 inputs: give one per input, or one for all"):
        pipe.run(["a", "b", "c"], 0, image=picture(1, items=2))
    assert LOADED == []


def test_a_component_called_directly_checks_what_it_is_given():
    tint = Tint()
    with pytest.raises(InputError, match=r"Tint takes image \(Image\), which was not given"):
        tint(Text(["a"]), 0)
    with pytest.raises(InputError, match=r"Tint takes image as Image of 2 item\(s\), one per input; got Image of 1"):
        tint(Text(["a", "b"]), 0, image=picture(1))
    with pytest.raises(InputError, match=r"Tint takes no input 'depth' \(it takes: image, mask\)"):
        tint(Text(["a"]), 0, image=picture(1), depth=picture(1))
    assert LOADED == []
    assert len(tint(Text(["a", "b", "c"]), 0, image=picture(1, items=3))) == 3


def test_old_components_run_unchanged(registry):
    """A step that takes nothing keeps run(inputs, generators): the engine passes it no keywords."""
    out = chain(registry, "plain").run(["a", "b"], 0).output
    assert out.pixels.shape == (2, 3, 8, 8)


# ------------------------------------------------------------------ strength


def test_strength_sets_the_option_of_every_step_that_has_one_and_is_recorded(registry, tmp_path):
    image = rgb_file(tmp_path / "in.png")
    same = loom.generate("a red circle", 1, generator="tint", image=image, strength=0.0, size=None, progress=False)
    assert torch.equal(same.output.pixels, read_image(image).pixels)  # strength 0: the image itself
    moved = loom.generate("a red circle", 1, generator="tint", image=image, strength=0.8, size=None, progress=False)
    assert moved.provenance["spec"]["steps"][0]["config"] == {"strength": 0.8}
    assert float((moved.output.pixels - same.output.pixels).abs().mean()) > 0.1


def test_strength_is_refused_where_no_step_takes_it_or_out_of_range(registry, tmp_path):
    with pytest.raises(InputError, match="no step of this chain takes strength"):
        loom.generate("a", 0, generator="plain", strength=0.5, progress=False)
    res = invoke("generate", "a", "--generator", "tint", "--image", rgb_file(tmp_path / "in.png"), "--strength", "0.5")
    assert res.exit_code == 2  # -o is required: a usage error
    out = tmp_path / "out.png"
    res = invoke("generate", "a", "--generator", "plain", "--strength", "0.5", "-o", out, "-q")
    one_error_line(res, "no step of this chain takes strength", "'plain'")
    with pytest.raises(loom.core.ConfigError, match="strength"):
        loom.generate("a", 0, generator="tint", image=tmp_path / "in.png", strength=1.5, progress=False)
    assert not out.exists() and LOADED == []


# ------------------------------------------------------------------ reading images


def test_every_mode_is_read_by_one_rule(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 128  # half-transparent red: on white, pink
    got = read_image(write_png(tmp_path / "rgba.png", rgba)).to_numpy()[0]
    assert got[0, 0].tolist() == [255, 127, 127]
    grey = np.full((4, 4), 77, dtype=np.uint8)
    assert read_image(write_png(tmp_path / "l.png", grey)).to_numpy()[0][0, 0].tolist() == [77, 77, 77]
    deep = np.full((4, 4), 257 * 200, dtype=np.uint16)  # 16-bit grey: 200 in 8 bits
    PILImage.fromarray(deep).save(tmp_path / "i16.png")
    assert PILImage.open(tmp_path / "i16.png").mode.startswith("I")
    assert read_image(tmp_path / "i16.png").to_numpy()[0][0, 0].tolist() == [200, 200, 200]
    palette = PILImage.fromarray(rgba[..., :3]).convert("P")
    palette.save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").to_numpy()[0][0, 0].tolist() == [255, 0, 0]
    la = np.stack([np.full((4, 4), 0, np.uint8), np.full((4, 4), 0, np.uint8)], -1)  # transparent black
    assert read_image(write_png(tmp_path / "la.png", la, "LA")).to_numpy()[0][0, 0].tolist() == [255, 255, 255]
    PILImage.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    red = read_image(tmp_path / "cmyk.jpg").to_numpy()[0][0, 0]
    assert red[0] > 240 and red[1] < 20 and red[2] < 20
    colour_mask = np.zeros((4, 4, 3), dtype=np.uint8)
    colour_mask[:2] = 255
    mask = read_image(write_png(tmp_path / "m.png", colour_mask), mask=True).pixels[0]
    assert torch.equal(mask[0], mask[1]) and torch.equal(mask[1], mask[2])
    assert mask[0, 0, 0] == 1.0 and mask[0, 3, 0] == 0.0


@pytest.mark.parametrize("name", ["rgba", "l", "p", "i16"])
def test_the_cli_edits_pngs_of_every_mode(registry, tmp_path, name):
    array = np.random.default_rng(0).integers(0, 256, (12, 16, 4), dtype=np.uint8)
    im = {
        "rgba": PILImage.fromarray(array),
        "l": PILImage.fromarray(array[..., 0]),
        "p": PILImage.fromarray(array[..., :3]).convert("P"),
        "i16": PILImage.fromarray(array[..., 0].astype(np.uint16) * 257),
    }[name]
    im.save(tmp_path / "in.png")
    out = tmp_path / "out.png"
    res = invoke(
        "generate",
        "a red circle",
        "--generator",
        "tint",
        "--image",
        tmp_path / "in.png",
        "--size",
        "16",
        "-o",
        out,
        "-q",
    )
    assert res.exit_code == 0, res.output
    assert PILImage.open(out).size == (16, 12)
    given = read_record(out)["given"]
    assert given[0]["image"]["width"] == 16 and given[0]["image"]["height"] == 12
    assert len(given[0]["image"]["sha256"]) == 64


# ------------------------------------------------------------------ bad inputs through the CLI


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int) -> bytes:
    """A small PNG file whose header says it is ``width`` × ``height`` (RGB, 8 bits): a few rows of pixels follow."""
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    rows = png_chunk(b"IDAT", zlib.compress(b"\x00" * 4096))
    return b"\x89PNG\r\n\x1a\n" + ihdr + rows + png_chunk(b"IEND", b"")


def edit(tmp_path, image, mask=None, generator="inpaint-fake", out=None):
    out = out or tmp_path / "out.png"
    return invoke(
        "generate",
        "a red circle",
        "--generator",
        generator,
        "--image",
        image,
        *(["--mask", mask] if mask else []),
        "--size",
        "16",
        "-o",
        out,
        "-q",
    )


@pytest.fixture
def old_output(tmp_path):
    """An output file from before, which a refused request must leave as it was."""
    path = write_png(tmp_path / "out.png", np.full((4, 4, 3), 9, dtype=np.uint8))
    return path, path.read_bytes()


def test_a_missing_mask_is_named_and_nothing_is_written(registry, tmp_path, old_output):
    out, before = old_output
    res = edit(tmp_path, rgb_file(tmp_path / "in.png"))
    one_error_line(res, "step 1 ('inpaint-fake') takes mask (Image)", "pass mask=")
    assert out.read_bytes() == before and LOADED == []


def test_a_mask_of_another_size_is_refused_naming_both_files_and_sizes(registry, tmp_path, old_output):
    out, before = old_output
    image, mask = rgb_file(tmp_path / "in.png"), mask_file(tmp_path / "mask.png", size=(8, 8))
    line = one_error_line(edit(tmp_path, image, mask), image, mask)
    assert "is 8 × 8 but image" in line and "is 16 × 12" in line
    assert out.read_bytes() == before and LOADED == []


def test_a_huge_png_header_is_refused_at_once(registry, tmp_path, old_output):
    out, before = old_output
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_header(50_000, 50_000))
    start = time.perf_counter()
    res = edit(tmp_path, huge, generator="tint")
    assert time.perf_counter() - start < 1.0
    one_error_line(res, huge, "50000 × 50000", "pixels", "LOOM_LIMIT_PIXELS")
    assert out.read_bytes() == before and LOADED == []


@pytest.mark.parametrize("damage", ["truncated", "not an image", "empty", "missing"])
def test_a_damaged_or_missing_image_is_refused_by_name(registry, tmp_path, old_output, damage):
    out, before = old_output
    whole = rgb_file(tmp_path / "whole.png", size=(64, 64)).read_bytes()
    bad = tmp_path / "bad.png"
    if damage == "truncated":
        bad.write_bytes(whole[: len(whole) // 2])
    elif damage == "not an image":
        bad.write_text("a red circle\n")
    elif damage == "empty":
        bad.write_bytes(b"")
    res = edit(tmp_path, bad, generator="tint")
    one_error_line(res, bad)
    assert out.read_bytes() == before and LOADED == []


def test_a_damaged_mask_is_refused_by_name(registry, tmp_path):
    bad = tmp_path / "mask.png"
    bad.write_bytes(mask_file(tmp_path / "m.png").read_bytes()[:40])
    one_error_line(edit(tmp_path, rgb_file(tmp_path / "in.png"), bad), bad)
    assert not (tmp_path / "out.png").exists()


def test_an_image_for_a_generator_that_takes_none_is_refused(registry, tmp_path):
    res = edit(tmp_path, rgb_file(tmp_path / "in.png"), generator="plain")
    one_error_line(res, "no step of this chain takes 'image'")
    assert not (tmp_path / "out.png").exists()


# ------------------------------------------------------------------ reproduce


def test_reproduce_with_the_same_image_and_mask_gives_the_same_pixels(registry, tmp_path):
    image, mask = rgb_file(tmp_path / "in.png"), mask_file(tmp_path / "mask.png")
    out = tmp_path / "out.png"
    res = invoke(
        "generate",
        "a red circle",
        "--generator",
        "tint",
        "--image",
        image,
        "--mask",
        mask,
        "--strength",
        "0.7",
        "--seed",
        "3",
        "-o",
        out,
        "-q",
    )
    assert res.exit_code == 0, res.output
    record = read_record(out)
    assert set(record["given"][0]) == {"image", "mask"}
    again = tmp_path / "again.png"
    res = invoke("reproduce", out, "-o", again, "--image", image, "--mask", mask, "--check", "-q")
    assert res.exit_code == 0, res.output
    assert np.array_equal(np.asarray(PILImage.open(again)), np.asarray(PILImage.open(out)))


def test_reproduce_refuses_a_changed_or_missing_input_by_name(registry, tmp_path):
    image, mask = rgb_file(tmp_path / "in.png"), mask_file(tmp_path / "mask.png")
    out = tmp_path / "out.png"
    assert edit(tmp_path, image, mask, generator="tint", out=out).exit_code == 0
    other = mask_file(tmp_path / "other.png", box=(0, 0, 4, 4))
    again = tmp_path / "again.png"
    line = one_error_line(invoke("reproduce", out, "-o", again, "--image", image, "--mask", other, "-q"), other)
    assert "mask" in line and "is not the one" in line
    line = one_error_line(invoke("reproduce", out, "-o", again, "--image", image, "-q"), "--mask FILE")
    assert "was made from mask" in line
    line = one_error_line(invoke("reproduce", out, "-o", again, "-q"), "--image FILE --mask FILE")
    assert not again.exists() and LOADED == ["Tint"]  # loaded once, by the generate above


def test_reproduce_through_the_api_takes_pil_images(registry, tmp_path):
    image = rgb_file(tmp_path / "in.png")
    result = loom.generate(
        "a", 4, generator="tint", image=PILImage.open(image), output=tmp_path / "o.png", progress=False
    )
    again = loom.reproduce(tmp_path / "o.png", image=image, progress=False, check=True)
    assert torch.equal(again.output.pixels, result.output.pixels)


# ------------------------------------------------------------------ batch


def test_a_batch_prompts_file_gives_each_item_its_own_image(registry, tmp_path):
    folder = tmp_path / "job"
    (folder / "pictures").mkdir(parents=True)
    for i in range(3):
        rgb_file(folder / "pictures" / f"{i}.png", seed=i)
    mask_file(folder / "pictures" / "mask.png")
    lines = [{"prompt": f"item {i}", "image": f"pictures/{i}.png", "id": f"x{i}"} for i in range(3)]
    lines[1]["mask"] = "pictures/mask.png"
    prompts = folder / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    spec = tmp_path / "tint.yaml"
    spec.write_text("steps:\n  - component: tint\n")
    res = invoke("batch", spec, "--prompts", prompts, "-o", tmp_path / "out", "--seeds", "5", "-q")
    assert res.exit_code == 0, res.output
    for i in range(3):
        made = loom.generate(
            f"item {i}",
            5 + i,
            generator="tint",
            size=None,
            progress=False,
            image=folder / "pictures" / f"{i}.png",
            mask=folder / "pictures" / "mask.png" if i == 1 else None,
        )
        stored = np.asarray(PILImage.open(tmp_path / "out" / f"x{i}.png"))
        assert np.array_equal(stored, made.output.to_numpy()[0])
    assert set(read_record(tmp_path / "out" / "x1.png")["given"][0]) == {"image", "mask"}


def test_a_batch_line_naming_a_missing_image_is_refused_before_anything_runs(registry, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "a", "image": "nowhere.png"}) + "\n")
    spec = tmp_path / "tint.yaml"
    spec.write_text("steps:\n  - component: tint\n")
    res = invoke("batch", spec, "--prompts", prompts, "-o", tmp_path / "out", "-q")
    one_error_line(res, "line 1", "nowhere.png", "does not exist")
    assert LOADED == []


def test_loom_pipeline_reads_image_files_and_records_their_digests(registry, tmp_path):
    image, mask = rgb_file(tmp_path / "in.png"), mask_file(tmp_path / "mask.png")
    pipe = loom.Pipeline.from_steps("tint", registry=registry)
    result = pipe.run(["a", "b"], 0, image=image, mask=mask, progress=False)
    from loom.records import digest

    read = read_image(image)
    assert [r["image"]["sha256"] for r in result.provenance["given"]] == [digest(read, 0)] * 2
    assert result.record(1)["given"] == [result.provenance["given"][1]]
    assert result.provenance["given"][0]["mask"] == {
        "kind": "Image",
        "sha256": digest(read_image(mask, mask=True), 0),
        "width": 16,
        "height": 12,
    }
