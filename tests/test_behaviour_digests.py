"""Behaviour is pinned: a fixed set of commands (every shipped family, PNG and WAV, a spoken prompt,
a batch, a reproduce, a spec run) must write the same pixels and samples, and the same provenance
records, as when the digests in ``behaviour_digests.json`` were recorded. A refactor that changes
what Loom writes fails here.

Floating-point results can differ between CPU instruction sets, so the digests hold for the machine
kind they were recorded on (``machine`` in the JSON); elsewhere the test skips, naming the command
that records them for that machine:

    LOOM_RECORD_DIGESTS=1 pytest tests/test_behaviour_digests.py
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from click.testing import CliRunner
from PIL import Image as PILImage

from loom.cli import main
from loom.outputs import read_record

pytestmark = pytest.mark.slow

DIGESTS = Path(__file__).with_name("behaviour_digests.json")
#: Record fields that change from run to run (wall-clock times), left out of the digests.
VOLATILE = ("created", "timings")
IMAGE = "a red circle on a blue background"
SOUND = "three rising high beeps"
SPOKEN = "a large red circle in the center on a blue background"

#: name -> (CLI arguments with {d} for the output folder, the file it writes)
COMMANDS = {
    "default": (["generate", IMAGE, "--seed", "3", "-o", "{d}/default.png"], "default.png"),
    "vae": (["generate", IMAGE, "--seed", "3", "--generator", "vae", "-o", "{d}/vae.png"], "vae.png"),
    "vae-as-typed": (
        ["generate", IMAGE, "--seed", "3", "--generator", "vae", "--as-typed", "-o", "{d}/vae-as-typed.png"],
        "vae-as-typed.png",
    ),
    "gan": (["generate", IMAGE, "--seed", "3", "--generator", "gan", "-o", "{d}/gan.png"], "gan.png"),
    "ar": (["generate", IMAGE, "--seed", "3", "--generator", "ar", "-o", "{d}/ar.png"], "ar.png"),
    "diffusion": (
        ["generate", IMAGE, "--seed", "3", "--generator", "diffusion", "-o", "{d}/diffusion.png"],
        "diffusion.png",
    ),
    "diffusion-fast": (
        ["generate", IMAGE, "--seed", "3", "--generator", "diffusion-fast", "-o", "{d}/diffusion-fast.png"],
        "diffusion-fast.png",
    ),
    "gan-sound": (["generate", SOUND, "--seed", "3", "-o", "{d}/gan-sound.wav"], "gan-sound.wav"),
    "vae-sound": (
        ["generate", SOUND, "--seed", "3", "--generator", "vae-sound", "-o", "{d}/vae-sound.flac"],
        "vae-sound.flac",
    ),
    "speech": (["generate", SPOKEN, "--seed", "3", "--generator", "speech", "-o", "{d}/speech.wav"], "speech.wav"),
    "spoken-prompt": (
        ["generate", "--prompt-audio", "{d}/speech.wav", "--seed", "3", "-o", "{d}/spoken.png"],
        "spoken.png",
    ),
    "reproduce": (["reproduce", "{d}/gan.png", "-o", "{d}/gan-again.png"], "gan-again.png"),
    "run": (
        ["run", "{d}/chain.yaml", "-p", IMAGE, "-p", "a small green box at the top", "--seed", "5", "-o", "{d}/run"],
        "run/0002.png",
    ),
    "batch": (
        ["batch", "gan", "--prompts", "{d}/prompts.txt", "-o", "{d}/batch", "--batch-size", "2", "--seed", "7"],
        "batch/000003.png",
    ),
}
CHAIN = "steps:\n  - component: text-encoder\n  - component: gan\n  - component: resize\n    config: {size: 96}\n"


def machine() -> str:
    return f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def content_digest(path: Path) -> str:
    """SHA-256 of the decoded pixels or samples (not the file bytes, which hold the record)."""
    if path.suffix == ".png":
        data = np.asarray(PILImage.open(path))
    else:
        pcm, rate = soundfile.read(path, dtype="int16", always_2d=True)
        data = np.concatenate([pcm.ravel().astype(np.int64), [rate]])
    return hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()


def record_digest(path: Path) -> str:
    record = {k: v for k, v in read_record(path).items() if k not in VOLATILE}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


@pytest.fixture(scope="module", autouse=True)
def recorded_threads():
    """The digests' thread count (2) while this module runs: scripts/test.sh gives each xdist worker one thread,
    and a float sum split over other threads may round differently."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("behaviour")
    (d / "chain.yaml").write_text(CHAIN)
    (d / "prompts.txt").write_text("a blue square\na big yellow triangle on the left\na red disc on black\n")
    runner, written = CliRunner(), {}
    for name, (args, out) in COMMANDS.items():
        res = runner.invoke(main, [a.format(d=d) for a in args] + ["-q"])
        assert res.exit_code == 0, f"{name}: {res.output}"
        written[name] = d / out
    return written


def measured(outputs: dict[str, Path]) -> dict[str, dict[str, str]]:
    return {n: {"content": content_digest(p), "record": record_digest(p)} for n, p in outputs.items()}


@pytest.fixture(scope="module")
def recorded(outputs) -> dict:
    if os.environ.get("LOOM_RECORD_DIGESTS"):
        DIGESTS.write_text(json.dumps({"machine": machine(), "digests": measured(outputs)}, indent=1) + "\n")
    saved = json.loads(DIGESTS.read_text())
    if saved["machine"] != machine():
        pytest.skip(
            f"digests recorded on {saved['machine']!r}, this is {machine()!r}; record with LOOM_RECORD_DIGESTS=1"
        )
    return saved["digests"]


@pytest.mark.parametrize("name", list(COMMANDS))
def test_same_output_as_recorded(name, outputs, recorded):
    got = measured({name: outputs[name]})[name]
    assert got["content"] == recorded[name]["content"], f"{name}: the pixels or samples changed"
    assert got["record"] == recorded[name]["record"], f"{name}: the provenance record changed"


def test_reproduce_gives_the_same_pixels(outputs):
    assert content_digest(outputs["reproduce"]) == content_digest(outputs["gan"])
