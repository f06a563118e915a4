"""Batch jobs on the local engine: prompts files, seeds, resume, bad items, the manifest, and
byte-identical outputs whatever the batch size or order."""

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image as PILImage
from pydantic import Field

import loom
from loom.batch_jobs import EXIT_ITEMS_FAILED, batch, read_items, read_manifest, writer_for
from loom.cli import main
from loom.core import Audio, ComponentConfig, Embedding, Encoder, Generator, Image, InputError, Registry, Text, hookimpl
from loom.outputs import read_record
from loom.plugins import shapes as shapes_world

# the Shapes world's own words (not copies of them), so every prompt stays one the world can draw
COLOURS = list(shapes_world.OBJECT_COLOURS)
SHAPES = list(shapes_world.SHAPES)
PLACES = [shapes_world.POSITION_PHRASES[p][0] for p in ("top left", "center", "bottom", "right")]
BACKGROUNDS = ["black", "gray", "blue", "white"]  # a choice among shapes_world.BACKGROUND_COLOURS


def shapes_prompts(n: int, offset: int = 0) -> list[str]:
    out = []
    for k in range(offset, offset + n):
        size = "small" if k % 2 else "large"
        colour, shape = COLOURS[k % len(COLOURS)], SHAPES[k % len(SHAPES)]
        out.append(f"a {size} {colour} {shape} {PLACES[k % 4]} on a {BACKGROUNDS[(k // 3) % 4]} background")
    return out


PROMPTS = shapes_prompts(20)


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(folder).glob("*.png"))}


def write_lines(path: Path, lines) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The 20 prompts as a plain-text file, run once in one batch of 20: (prompts file, folder, report)."""
    root = tmp_path_factory.mktemp("reference")
    prompts = write_lines(root / "prompts.txt", PROMPTS)
    report = batch("vae", prompts, root / "out", batch_size=20, progress=False)
    return prompts, root / "out", report


# -- prompts files and seeds (no model) ------------------------------------------------------------
def test_plain_text_prompts_get_position_ids_and_seeds(tmp_path):
    f = write_lines(tmp_path / "p.txt", ["  first prompt ", "", "second prompt", "   ", "third"])
    items = read_items(f)
    assert [(i.id, i.prompt, i.seed) for i in items] == [
        ("000001", "first prompt", 0),
        ("000002", "second prompt", 1),
        ("000003", "third", 2),
    ]
    assert [i.seed for i in read_items(f, seeds=100)] == [100, 101, 102]
    assert [i.seed for i in read_items(f, seeds="5,9,2")] == [5, 9, 2]


def test_jsonl_prompts_with_own_seeds_ids_and_params(tmp_path):
    f = write_lines(
        tmp_path / "p.jsonl",
        [
            json.dumps({"prompt": "a", "seed": 77, "id": "first"}),
            "",
            json.dumps({"prompt": "b"}),
            json.dumps({"prompt": "c", "params": {"vae": {"temperature": 0.5}}}),
        ],
    )
    items = read_items(f, seeds=10)
    assert [(i.id, i.seed) for i in items] == [("first", 77), ("000002", 11), ("000003", 12)]
    assert items[2].params == {"vae": {"temperature": 0.5}} and items[0].params is None


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"prompt": "a", ', "line 2: not valid JSON"),
        ('["a"]', "line 2: expected a prompt string or an object"),
        ('{"text": "a"}', "line 2: unknown key 'text'; a line may hold prompt, seed, id, params"),
        ('{"seed": 3}', "line 2: no 'prompt' key"),
        ('{"prompt": 5}', "line 2: 'prompt' must be a string"),
        ('{"prompt": "a", "seed": -1}', "line 2: seed -1 is not an integer between 0 and 2\\*\\*63-1"),
        ('{"prompt": "a", "seed": "3"}', "line 2: seed '3' is not an integer"),
        ('{"prompt": "a", "id": "../x"}', "line 2: id '../x' cannot name a file"),
        # matched whole: `$` alone would let a trailing newline through into a file name
        ('{"prompt": "a", "id": "abc\\n"}', "line 2: id 'abc\\\\n' cannot name a file"),
        ('{"prompt": "a", "id": "one"}', "line 2: id 'one' is already used by .*line 1"),
        ('{"prompt": "a", "params": {"vae": 0.5}}', "line 2: 'params' must map a step's component name"),
    ],
)
def test_bad_prompts_file_line_names_the_line(tmp_path, line, message):
    f = write_lines(tmp_path / "p.jsonl", [json.dumps({"prompt": "ok", "id": "one"}), line])
    with pytest.raises(InputError, match=message):
        read_items(f)


def test_bad_seeds_and_empty_files_are_clear(tmp_path):
    f = write_lines(tmp_path / "p.txt", ["a", "b"])
    with pytest.raises(InputError, match="got 3 seeds for 2 inputs"):
        read_items(f, seeds=[1, 2, 3])
    with pytest.raises(InputError, match="give a base seed"):
        read_items(f, seeds="x")
    with pytest.raises(InputError, match="holds no prompts"):
        read_items(write_lines(tmp_path / "e.txt", ["", "  "]))
    with pytest.raises(InputError, match="does not exist"):
        read_items(tmp_path / "missing.txt")


def test_unknown_engine_and_missing_ray_name_the_fix(tmp_path, monkeypatch):
    f = write_lines(tmp_path / "p.txt", ["a"])
    with pytest.raises(InputError, match="unknown engine 'spark': use 'local' .* or 'ray'"):
        batch("vae", f, tmp_path / "out", engine="spark")
    with pytest.raises(InputError, match="an address is for the ray engine"):
        batch("vae", f, tmp_path / "out", address="127.0.0.1:6379")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(InputError, match=r"pip install 'loom\[ray\]'"):
        batch("vae", f, tmp_path / "out", engine="ray")
    res = CliRunner().invoke(main, ["batch", "vae", "--prompts", str(f), "-o", str(tmp_path / "o"), "--engine", "ray"])
    assert res.exit_code == 1 and "pip install 'loom[ray]'" in res.output
    assert not (tmp_path / "out").exists(), "nothing is written before the engine is known to work"


def test_help_imports_neither_ray_nor_torch():
    code = (
        "import sys; from click.testing import CliRunner; from loom.cli import main\n"
        "for args in (['--help'], ['batch', '--help']):\n"
        "    r = CliRunner().invoke(main, args); assert r.exit_code == 0, r.output\n"
        "assert 'SPEC_OR_GENERATOR' in r.output and '--engine' in r.output\n"
        "print(sorted(m for m in ('torch', 'ray', 'loom.batch_jobs') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


# -- fakes: a chain that gives NaN for some prompts, and one that ends in audio ---------------------
class MarkEncoder(Encoder):
    """Embeds 1.0 for prompts containing 'nan', 0.0 otherwise; 'stop' raises KeyboardInterrupt."""

    input_type = Text
    output_type = Embedding

    def run(self, inputs, generators):
        import torch

        if any("stop" in s for s in inputs.items):
            raise KeyboardInterrupt
        marks = torch.tensor([[1.0 if "nan" in s else 0.0] for s in inputs.items])
        return Embedding(tokens=marks[:, None, :], mask=torch.ones(len(marks), 1), encoder="mark", pooled=marks)


class NaNWhenMarked(Generator):
    class Config(ComponentConfig):
        size: int = Field(8, ge=2, le=64)

    input_type = Embedding
    output_type = Image

    def run(self, inputs, generators):
        import torch

        s = self.config.size
        px = torch.stack([torch.rand(3, s, s, generator=g) for g in generators])
        px[inputs.pooled[:, 0] > 0.5] = float("nan")
        return Image(px)


class Beep(Generator):
    input_type = Embedding
    output_type = Audio

    def run(self, inputs, generators):
        import torch

        return Audio(torch.zeros(len(inputs), 1, 100), 16000)


@pytest.fixture
def fake_registry():
    @hookimpl
    def loom_register_components(register):
        register("mark", MarkEncoder)
        register("nan-when-marked", NaNWhenMarked)
        register("beep", Beep)

    registry = Registry()
    registry.add_plugin(
        SimpleNamespace(loom_register_components=loom_register_components, __name__="batchfakes"),
        "batchfakes",
        "batchfakes",
        "1.0",
    )
    return registry


FAKE_CHAIN = {"steps": [{"component": "mark"}, {"component": "nan-when-marked"}]}


def test_nan_output_is_a_failed_row_and_the_rest_are_written(tmp_path, fake_registry):
    prompts = ["one", "two nan", "three", "four", "five nan", "six"]
    report = batch(FAKE_CHAIN, prompts, tmp_path, batch_size=4, progress=False, registry=fake_registry)
    assert (report.made, report.failed, report.skipped) == (4, 2, 0)
    rows = read_manifest(report.manifest)
    assert [r["status"] for r in rows] == ["ok", "failed", "ok", "ok", "failed", "ok"]
    assert rows[1]["error"].startswith("LoomError: NaNWhenMarked gave a broken Image: Image.pixels holds NaN")
    assert rows[1]["output"] is None
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["000001.png", "000003.png", "000004.png", "000006.png"]
    again = batch(FAKE_CHAIN, prompts, tmp_path, batch_size=4, progress=False, registry=fake_registry)
    assert (again.made, again.failed, again.skipped) == (0, 2, 4), "failed items are tried again, made ones skipped"


def test_output_type_without_a_writer_is_refused_before_anything_runs(tmp_path, fake_registry):
    with pytest.raises(InputError, match="cannot write Embedding outputs yet .*Image \\(PNG\\), Audio \\(WAV\\)"):
        batch({"steps": [{"component": "mark"}]}, ["a"], tmp_path / "o", registry=fake_registry)
    assert not (tmp_path / "o").exists()
    with pytest.raises(InputError, match="cannot write Embedding"):
        writer_for(Embedding)


def test_a_chain_ending_in_audio_writes_wav(tmp_path, fake_registry):
    report = batch(
        {"steps": [{"component": "mark"}, {"component": "beep"}]},
        ["a", "b"],
        tmp_path,
        registry=fake_registry,
        progress=False,
    )
    assert report.made == 2 and writer_for(Audio).suffix == ".wav"
    assert sorted(p.name for p in tmp_path.glob("*.wav")) == ["000001.wav", "000002.wav"]
    assert read_record(tmp_path / "000002.wav")["inputs"] == ["b"]


def test_interrupted_job_writes_its_manifest_with_pending_items(tmp_path, fake_registry):
    prompts = ["a", "b", "c", "stop", "d"]
    with pytest.raises(KeyboardInterrupt):
        batch(FAKE_CHAIN, prompts, tmp_path, batch_size=3, progress=False, registry=fake_registry)
    rows = read_manifest(tmp_path / "manifest.jsonl")
    assert [r["status"] for r in rows] == ["ok", "ok", "ok", "pending", "pending"]
    assert not list(tmp_path.glob(".*.tmp"))


# -- the real default chain ------------------------------------------------------------------------
@pytest.mark.slow
def test_outputs_are_byte_identical_across_batch_sizes_and_order(reference, tmp_path):
    prompts, ref_dir, ref_report = reference
    assert ref_report.made == 20 and ref_report.failed == 0
    ref = digests(ref_dir)
    assert len(ref) == 20 and len(set(ref.values())) == 20, "every item differs from every other"
    for size in (1, 7):
        report = batch("vae", prompts, tmp_path / f"b{size}", batch_size=size, progress=False)
        assert report.made == 20
        assert digests(tmp_path / f"b{size}") == ref, f"batch size {size} changed some output's bytes"
    order = list(range(20))
    random.Random(3).shuffle(order)
    shuffled = write_lines(
        tmp_path / "shuffled.jsonl",
        [json.dumps({"prompt": PROMPTS[k], "seed": k, "id": f"{k + 1:06d}"}) for k in order],
    )
    batch("vae", shuffled, tmp_path / "shuffled", batch_size=7, progress=False)
    assert digests(tmp_path / "shuffled") == ref, "running in another order changed some output's bytes"
    # the same pixels and the same record (a batch output's record holds no timings)
    for name in ref:
        a, b = np.asarray(PILImage.open(ref_dir / name)), np.asarray(PILImage.open(tmp_path / "b1" / name))
        assert a.shape == (256, 256, 3) and np.array_equal(a, b)
        assert read_record(ref_dir / name) == read_record(tmp_path / "b1" / name)
    record = read_record(ref_dir / "000005.png")
    assert record["inputs"] == [PROMPTS[4]] and record["seeds"] == [4] and "timings" not in record
    other_seed = batch("vae", [PROMPTS[4]], tmp_path / "seed99", seeds=99, progress=False)
    assert other_seed.made == 1 and digests(tmp_path / "seed99")["000001.png"] != ref["000005.png"]


@pytest.mark.slow
def test_rerun_skips_valid_outputs_and_redoes_missing_truncated_stale_ones(reference, tmp_path):
    prompts, ref_dir, _ = reference
    out = tmp_path / "out"
    first = batch("vae", prompts, out, batch_size=8, progress=False)
    assert first.made == 20
    (out / "000002.png").unlink()  # missing
    data = (out / "000003.png").read_bytes()
    (out / "000003.png").write_bytes(data[: len(data) // 2])  # truncated
    (out / "000004.png").write_bytes(data[:-1])  # only the end chunk cut
    (out / "000005.png").write_bytes((ref_dir / "000006.png").read_bytes())  # another item's output
    fd, left = tempfile.mkstemp(prefix=".000007.png.", suffix=".tmp", dir=out)  # as a killed write leaves it
    os.close(fd)
    stranger = out / ".notes.txt.abc.tmp"
    stranger.write_text("not Loom's")
    untouched = (out / "000010.png").stat().st_mtime_ns
    second = batch("vae", prompts, out, batch_size=8, progress=False)
    assert (second.made, second.skipped, second.failed, second.temp_files_removed) == (4, 16, 0, 1)
    assert not Path(left).exists() and stranger.exists()
    assert (out / "000010.png").stat().st_mtime_ns == untouched, "a valid output is not rewritten"
    assert digests(out) == digests(ref_dir)
    rows = read_manifest(second.manifest)
    assert [r["id"] for r in rows if r["status"] == "ok"] == ["000002", "000003", "000004", "000005"]
    skipped = next(r for r in rows if r["id"] == "000010")
    assert skipped["status"] == "skipped" and skipped["timings"]["run_s"] > 0, "timings of earlier runs are kept"


@pytest.mark.slow
def test_bad_items_are_recorded_and_the_job_goes_on_with_exit_status_3(reference, tmp_path):
    lines = [json.dumps({"prompt": p}) for p in PROMPTS[:5]]
    lines[1] = json.dumps({"prompt": "   "})  # the chain rejects it
    lines[3] = json.dumps({"prompt": PROMPTS[3], "params": {"vae": {"temperature": 9}}})  # an invalid option
    lines.append(json.dumps({"prompt": PROMPTS[5], "params": {"gan": {"temperature": 1}}}))  # no such step
    f = write_lines(tmp_path / "p.jsonl", lines)
    res = CliRunner().invoke(main, ["batch", "vae", "--prompts", str(f), "-o", str(tmp_path / "out"), "-q"])
    assert res.exit_code == EXIT_ITEMS_FAILED, res.output
    assert "6 items: 3 made, 3 failed, 0 skipped" in res.output and "items/s" in res.output
    rows = read_manifest(tmp_path / "out" / "manifest.jsonl")
    assert [r["status"] for r in rows] == ["ok", "failed", "ok", "failed", "ok", "failed"]
    assert "prompt 1 is empty" in rows[1]["error"]
    assert "'temperature' = 9" in rows[3]["error"]
    assert "params name 'gan', which is no step of this chain" in rows[5]["error"]
    # items before and after a bad one are the same bytes as in the reference run
    ref = digests(reference[1])
    assert digests(tmp_path / "out") == {n: ref[n] for n in ("000001.png", "000003.png", "000005.png")}


@pytest.mark.slow
def test_params_change_the_output_and_its_record_replays(reference, tmp_path):
    f = write_lines(
        tmp_path / "p.jsonl", [json.dumps({"prompt": PROMPTS[0], "seed": 0, "params": {"vae": {"temperature": 0.0}}})]
    )
    report = batch("vae", f, tmp_path / "out", progress=False)
    assert report.made == 1
    path = tmp_path / "out" / "000001.png"
    assert digests(tmp_path / "out")["000001.png"] != digests(reference[1])["000001.png"]
    vae_step = next(s for s in read_record(path)["spec"]["steps"] if s["component"] == "vae")
    assert vae_step["component"] == "vae" and vae_step["config"]["temperature"] == 0.0
    again = loom.reproduce(path, progress=False)
    assert np.array_equal(again.output.to_numpy()[0], np.asarray(PILImage.open(path)))


@pytest.mark.slow
def test_parquet_manifest(reference, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    report = batch("vae", PROMPTS[:3], tmp_path, manifest="parquet", progress=False)
    table = pq.read_table(tmp_path / "manifest.parquet").to_pylist()
    assert [r["status"] for r in table] == ["ok"] * 3 and report.manifest.name == "manifest.parquet"
    assert [r["output"] for r in table] == ["000001.png", "000002.png", "000003.png"]
    assert table[0]["timings"]["write_s"] > 0
    assert batch("vae", PROMPTS[:3], tmp_path, manifest="parquet", progress=False).skipped == 3


@pytest.mark.slow
def test_killed_run_then_rerun_leaves_exactly_one_complete_output_per_prompt(reference, tmp_path):
    """A real SIGKILL of `loom batch` mid-run, then the same command again."""
    prompts, ref_dir, _ = reference
    out = tmp_path / "out"
    loom_cmd = str(Path(sys.executable).parent / "loom")
    cmd = [loom_cmd, "batch", "vae", "--prompts", str(prompts), "-o", str(out), "--batch-size", "1", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 240
        while len(list(out.glob("*.png"))) < 3 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        made_before_kill = len(list(out.glob("*.png")))
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert 3 <= made_before_kill < 20, f"the kill should land mid-run (outputs at kill: {made_before_kill})"
    assert not (out / "manifest.jsonl").exists(), "a killed run writes no manifest"
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "0 failed" in rerun.stdout
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{k:06d}.png" for k in range(1, 21)] + ["manifest.jsonl"])
    assert digests(out) == digests(ref_dir)
    rows = read_manifest(out / "manifest.jsonl")
    assert len(rows) == 20 and {r["status"] for r in rows} == {"ok", "skipped"}


@pytest.mark.slow
def test_fixed_micro_batch_is_what_makes_outputs_identical(monkeypatch):
    """What the product promises, whatever the BLAS build: every component's ``run`` sees chunks
    of exactly its ``micro_batch`` items (the last one padded), so an item's output is
    byte-identical alone or in batches of any size. Whether the floats would differ without the
    fixed shape depends on the BLAS build (some give batch-invariant matmuls), so that part only
    asserts they stay within rounding of each other."""
    import torch

    pipeline = loom.pipeline_for(loom.default_spec())
    calls: dict[str, list[int]] = {}

    def counted(name, run):  # records the number of items every run() call gets
        def counting_run(inputs, generators):
            calls.setdefault(name, []).append(len(inputs))
            return run(inputs, generators)

        return counting_run

    for component in pipeline.components:
        monkeypatch.setattr(component, "run", counted(type(component).__name__, component.run))

    def pixels(size: int):
        runs = [
            pipeline.run(PROMPTS[s : s + size], list(range(s, min(s + size, 20))), progress=False)
            for s in range(0, 20, size)
        ]
        return torch.cat([r.output.pixels for r in runs])

    whole = pixels(20)
    assert torch.equal(whole, pixels(1)) and torch.equal(whole, pixels(7))
    assert set(calls) == {type(c).__name__ for c in pipeline.components}
    for component in pipeline.components:
        seen = set(calls[type(component).__name__])
        assert seen == {component.micro_batch}, (type(component).__name__, seen)
    for component in pipeline.components:  # every component runs on the whole batch at once
        monkeypatch.setattr(type(component), "micro_batch", None)
    calls.clear()
    loose_whole, loose_single = pixels(20), pixels(1)
    assert all(set(sizes) == {20, 1} for sizes in calls.values()), calls  # the fixed shape is really off
    assert (loose_whole - loose_single).abs().max() < 1e-4
    assert (loose_whole - whole).abs().max() < 1e-4


def test_batch_is_exported_from_loom():
    assert loom.batch is batch
    assert loom.BatchReport.__name__ == "BatchReport"
