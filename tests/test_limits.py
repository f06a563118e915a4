"""Limits before allocation (issue 32): each limit of loom.limits refuses the real bad input through
the CLI or the API with one line naming the thing and how to raise the limit, before anything loads
and with nothing written; and `-n` / `loom run` write each output as soon as it is made."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from pydantic import Field

import loom
import loom.api
import loom.limits
from loom.cli import main
from loom.core import ComponentConfig, Generator, Image, Text, get_registry, hookimpl
from loom.outputs import read_record

#: What the probe saw in the folder it watches, once per call of its run: (file, decoded whole?) pairs.
SEEN: list[list[tuple[str, bool]]] = []
WATCH: list[Path] = []


class Probe(Generator):
    """Text → a small seeded image, one item per call, looking at WATCH's files each time it runs."""

    class Config(ComponentConfig):
        size: int = Field(8, ge=2, le=128)

    input_type = Text
    output_type = Image
    micro_batch = 1

    def run(self, inputs, generators):
        import torch

        if WATCH:
            SEEN.append([(p.name, _decodes(p)) for p in sorted(WATCH[0].glob("*.png"))])
        s = self.config.size
        return Image(torch.stack([torch.rand(3, s, s, generator=g) for g in generators]))


def _decodes(path: Path) -> bool:
    from PIL import Image as PILImage

    try:
        with PILImage.open(path) as im:
            im.load()
        return True
    except Exception:
        return False


@hookimpl
def loom_register_components(register):
    register("limits-probe", Probe)


@pytest.fixture
def probe(tmp_path):
    """The probe registered in the process registry (once), watching ``tmp_path / "out"``."""
    import sys

    registry = get_registry()
    if "limits-probe" not in registry.plugins:
        registry.add_plugin(sys.modules[__name__], "limits-probe")
    SEEN.clear()
    WATCH[:] = [tmp_path / "out"]
    yield
    WATCH.clear()


def invoke(args, **env):
    start = time.perf_counter()
    result = CliRunner().invoke(main, args, env=env)
    return result, time.perf_counter() - start


def assert_refused(result, *named):
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in named:
        assert word in lines[0], lines[0]


def spec_file(tmp_path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


ALIAS_BOMB = "\n".join(
    [f"a0: &a0 [{', '.join(['lol'] * 9)}]"]
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    + ["steps: [{component: resize, config: {size: *a9}}]"]
)


def test_yaml_alias_bomb_is_refused_fast_in_one_line(tmp_path):
    bomb = spec_file(tmp_path, ALIAS_BOMB, "bomb.yaml")
    assert bomb.stat().st_size < 1000  # a few hundred bytes that expand to about 10⁹ values
    result, seconds = invoke(["run", str(bomb), "-o", str(tmp_path / "out"), "-p", "x", "-q"])
    assert_refused(result, "bomb.yaml", "LOOM_LIMIT_SPEC_NODES")
    assert seconds < 2
    assert not (tmp_path / "out").exists()


def test_yaml_merge_key_bomb_is_refused_fast(tmp_path):
    merges = [f"m{i}: &m{i} {{<<: [{', '.join([f'*m{i - 1}'] * 8)}]}}" for i in range(1, 12)]
    bomb = spec_file(tmp_path, "\n".join(["m0: &m0 {x: 1, y: 2}", *merges, "steps: [{component: resize}]"]))
    start = time.perf_counter()
    with pytest.raises(loom.limits.LimitError, match="spec_nodes"):
        loom.Pipeline.from_spec(bomb)
    assert time.perf_counter() - start < 2


def test_a_spec_that_holds_itself_is_refused(tmp_path):
    spec = spec_file(tmp_path, "a: &a [1, *a]\nsteps: [{component: resize}]\n", "loop.yaml")
    result, _ = invoke(["run", str(spec), "-o", str(tmp_path / "out"), "-p", "x", "-q"])
    assert_refused(result, "loop.yaml", "holds itself")


@pytest.mark.parametrize("depth", [100, 100_000])
def test_deep_spec_is_refused_without_a_recursion_error(tmp_path, depth):
    deep = spec_file(tmp_path, "steps: [{component: resize, config: {x: " + "[" * depth + "]" * depth + "}}]")
    result, _ = invoke(["run", str(deep), "-o", str(tmp_path / "out"), "-p", "x", "-q"])
    assert_refused(result, "spec.yaml", "nested deeper", "LOOM_LIMIT_SPEC_DEPTH")
    assert not (tmp_path / "out").exists()


def test_deep_mapping_given_to_the_api_is_refused():
    config: dict = {}
    inner = config
    for _ in range(100):
        inner["x"] = inner = {}
    with pytest.raises(loom.limits.LimitError, match="spec_depth"):
        loom.Pipeline.from_spec({"steps": [{"component": "resize", "config": config}]})


def test_env_var_raises_the_depth_limit(tmp_path):
    deep = spec_file(tmp_path, "steps: [{component: resize, config: {x: " + "[" * 40 + "]" * 40 + "}}]")
    result, _ = invoke(["run", str(deep), "-o", str(tmp_path / "out"), "-p", "x", "-q"], LOOM_LIMIT_SPEC_DEPTH="50")
    # past the depth limit, the spec reaches the resize step's own validation
    assert result.exit_code == 1 and "unknown option 'x'" in result.stderr and "limit" not in result.stderr


def test_spec_over_its_byte_limit_is_refused_before_parsing(tmp_path):
    spec = spec_file(tmp_path, "steps: [{component: resize}]\n# " + "x" * 2000)
    result, _ = invoke(["run", str(spec), "-o", str(tmp_path / "out"), "-p", "x", "-q"], LOOM_LIMIT_SPEC_BYTES="1000")
    assert_refused(result, "spec.yaml", "LOOM_LIMIT_SPEC_BYTES")


def test_a_huge_invalid_value_is_quoted_shortened(tmp_path):
    spec = spec_file(tmp_path, "steps: [{component: resize, config: {size: [" + ",".join(["123456"] * 10_000) + "]}}]")
    result, _ = invoke(["run", str(spec), "-o", str(tmp_path / "out"), "-p", "x", "-q"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "'size'" in result.stderr and "is invalid" in result.stderr and len(result.stderr) < 2000


def test_generate_size_8192_is_refused_before_anything_loads(tmp_path):
    out = tmp_path / "out.png"
    out.write_bytes(b"old")
    result, seconds = invoke(["generate", "a red circle", "-o", str(out), "--size", "8192", "-q"])
    assert_refused(result, "8192", "pixels", "LOOM_LIMIT_PIXELS")
    assert out.read_bytes() == b"old" and seconds < 5


def test_a_spec_size_option_is_refused_and_the_env_var_raises_it(tmp_path, probe):
    spec = spec_file(tmp_path, "steps: [{component: limits-probe, config: {size: 64}}]")
    args = ["run", str(spec), "-o", str(tmp_path / "out"), "-p", "x", "-q"]
    result, _ = invoke(args, LOOM_LIMIT_PIXELS="1000")
    assert_refused(result, "spec.yaml", "limits-probe", "4,096 pixels", "LOOM_LIMIT_PIXELS")
    assert not (tmp_path / "out").exists()
    result, _ = invoke(args, LOOM_LIMIT_PIXELS="4096")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "0001.png").is_file()


def test_a_61_second_spoken_prompt_is_refused_from_its_header(tmp_path, monkeypatch):
    import soundfile

    wav = tmp_path / "said.wav"
    soundfile.write(wav, np.zeros(61 * 16000, np.int16), 16000)

    def never(path):
        raise AssertionError("the clip was decoded before its length was checked")

    monkeypatch.setattr(loom.api, "read_audio", never)
    out = tmp_path / "out.png"
    result, _ = invoke(["generate", "--prompt-audio", str(wav), "-o", str(out), "-q"])
    assert_refused(result, "said.wav", "61", "seconds per spoken prompt", "LOOM_LIMIT_AUDIO_SECONDS")
    assert not out.exists()


def test_count_over_the_items_limit_is_refused(tmp_path):
    out = tmp_path / "out.png"
    result, _ = invoke(["generate", "a red circle", "-o", str(out), "-n", "10001", "-q"])
    assert_refused(result, "10,001", "items per call", "LOOM_LIMIT_ITEMS")
    with pytest.raises(loom.limits.LimitError, match="items"):
        loom.generate(["a", "b", "c"], count=4000, output=out, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_run_prompts_over_the_items_limit_are_refused(tmp_path, probe):
    spec = spec_file(tmp_path, "steps: [{component: limits-probe}]")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a\nb\nc\n")
    result, _ = invoke(["run", str(spec), "-o", str(tmp_path / "out"), "--prompts", str(prompts)], LOOM_LIMIT_ITEMS="2")
    assert_refused(result, "3 prompts", "LOOM_LIMIT_ITEMS")
    assert not (tmp_path / "out").exists()


def test_run_writes_each_output_as_soon_as_it_is_made(tmp_path, probe):
    spec = spec_file(tmp_path, "steps: [{component: limits-probe}]")
    result, _ = invoke(["run", str(spec), "-o", str(tmp_path / "out"), "-p", "a", "-p", "b", "-p", "c", "-q"])
    assert result.exit_code == 0, result.output
    # the third item ran with the first two files already there, whole
    assert SEEN == [[], [("0001.png", True)], [("0001.png", True), ("0002.png", True)]]


def test_generate_n_writes_progressively_and_as_one_run_would(tmp_path, probe):
    out = tmp_path / "out" / "pic.png"
    out.parent.mkdir()
    result, _ = invoke(["generate", "a", "-n", "3", "--generator", "limits-probe", "-o", str(out), "--seed", "5", "-q"])
    assert result.exit_code == 0, result.output
    # each call of the probe sees the files of the items before it (resize runs between, one at a time)
    assert [names for names in SEEN] == [[], [("pic-1.png", True)], [("pic-1.png", True), ("pic-2.png", True)]]
    from PIL import Image as PILImage

    whole = loom.pipeline_for(loom.default_spec("limits-probe")).run(["a"] * 3, 5, progress=False)
    for i in range(3):
        path = out.with_name(f"pic-{i + 1}.png")
        record = read_record(path)
        assert (record["item"], record["batch_size"], record["seeds"]) == (i, 3, [5 + i])
        with PILImage.open(path) as written:
            assert np.array_equal(np.asarray(written.convert("RGB")), np.asarray(whole.images[i]))


def test_limits_are_refused_in_the_api_too():
    with pytest.raises(loom.limits.LimitError, match="pixels"):
        loom.generate("a red circle", size=8192, progress=False)
    loom.limits.configure(pixels=8192 * 8192)
    try:
        assert loom.limits.current().pixels == 8192 * 8192
    finally:
        loom.limits.configure()


def test_configure_refuses_a_bad_value():
    with pytest.raises(loom.core.ConfigError, match="LOOM_LIMIT_ITEMS"):
        loom.limits.configure(items=0)
    assert os.environ.get("LOOM_LIMIT_ITEMS") is None or loom.limits.current().items > 0
