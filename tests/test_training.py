"""Loom's one training workflow: steps, checkpoints, interruption and resume, data folders."""

import json
from itertools import combinations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from fakes import ctrl_c_at
from PIL import Image as PILImage
from safetensors.torch import load_file

import loom
from loom.cli import main
from loom.core import InputError

pytestmark = pytest.mark.slow

FAMILIES = ["vae", "gan", "ar"]
TINY = dict(pool=96, options={"batch_size": 8}, progress=False)


def sample_cells(path, prompts: int, height: int, width: int) -> list[np.ndarray]:
    """The samples in a run's samples.png, checked against the layout it promises: one
    height×width sample per sample prompt, up to four a row, 2-pixel white gutters, scaled up by
    whole pixels to at least 128 px a sample. Each sample must be drawn (not one flat colour), and
    not a copy of another (each prompt and seed gives its own)."""
    cols = min(4, prompts)
    rows = -(-prompts // cols)
    scale = max(1, 128 // height)
    image = np.asarray(PILImage.open(path).convert("RGB"))
    assert image.shape == ((rows * (height + 2) + 2) * scale, (cols * (width + 2) + 2) * scale, 3), image.shape
    grid = image[::scale, ::scale].astype(int)
    assert np.array_equal(image, np.repeat(np.repeat(grid, scale, 0), scale, 1))  # nearest-neighbour scaling
    cells, gutters = [], np.ones(grid.shape[:2], bool)
    for i in range(prompts):
        top, left = 2 + (i // cols) * (height + 2), 2 + (i % cols) * (width + 2)
        cells.append(grid[top : top + height, left : left + width])
        gutters[top : top + height, left : left + width] = False
    assert (grid[gutters] == 255).all(), "the gutters (and any unused cell) are white"
    for i, cell in enumerate(cells):
        assert cell.std() > 2, f"sample {i} is blank (one flat colour)"  # 4.6 at least, measured
    # a model a few steps in may draw two prompts nearly alike (0.4 of 255 apart, measured), never
    # byte for byte: each sample has its own prompt and seed
    assert len({cell.tobytes() for cell in cells}) == prompts, "two samples are the same image"
    assert max(np.abs(cells[i] - cells[j]).mean() for i, j in combinations(range(prompts), 2)) > 2
    if rows > 1:  # the rows are not one row repeated (4.2 of 255 apart at least, measured)
        assert np.abs(np.stack(cells[:cols]) - np.stack(cells[cols : 2 * cols])).mean() > 1
    return cells


def assert_loss_curve_falls(path) -> None:
    """loss.png draws the loss over the run as one coloured line (all else is black on white)
    across the plot, ending lower than it starts (the runs checked here do lower their loss)."""
    image = np.asarray(PILImage.open(path).convert("RGB")).astype(int)
    assert image.shape == (360, 640, 3)
    ys, xs = np.nonzero(image.max(-1) - image.min(-1) > 60)
    assert len(xs) > 300, "no loss curve drawn"
    assert xs.min() <= 52 and xs.max() >= 618, (xs.min(), xs.max())  # from the first step to the last
    first, last = ys[xs <= xs.min() + 2].mean(), ys[xs >= xs.max() - 2].mean()
    assert last > first, (first, last)  # lower on the plot: a smaller loss


@pytest.mark.parametrize("family", FAMILIES)
def test_a_few_steps_lower_the_loss_and_write_a_loadable_generator(tmp_path, family):
    out = loom.train(family, steps=40, seed=3, out=tmp_path / family, checkpoint_every=25, **TINY)
    assert torch.tensor([1e-40]).item() != 0, "training left the process flushing subnormal floats to zero"
    config = json.loads((out / "config.json").read_text())
    training = config["training"]
    assert config["family"] == family and training["steps"] == 40 and training["seed"] == 3
    assert training["final_loss"] < training["first_loss"], training
    progress = json.loads((out / "checkpoint" / "progress.json").read_text())
    assert progress["step"] == 40 and len(progress["losses"]) == 40
    from loom.plugins.shapes import SHAPES_SAMPLE_PROMPTS

    sample_cells(out / "samples.png", len(SHAPES_SAMPLE_PROMPTS), 64, 64)
    assert_loss_curve_falls(out / "loss.png")
    result = loom.generate("a red circle on a blue background", seed=0, generator=str(out), size=None, progress=False)
    assert result.output.pixels.shape == (1, 3, 64, 64)
    step = result.provenance["spec"]["steps"][-1]
    assert step["component"] == family and step["config"]["weights"] == str(out.resolve())


@pytest.mark.parametrize("family", FAMILIES)
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, family):
    whole = loom.train(family, steps=6, out=tmp_path / "whole", **TINY)

    part = loom.train(family, steps=6, out=tmp_path / "part", on_step=ctrl_c_at(3), **TINY)
    assert json.loads((part / "checkpoint" / "progress.json").read_text())["step"] == 3
    assert json.loads((part / "config.json").read_text())["training"]["steps"] == 3
    loom.train(family, resume=part, progress=False, command="loom train again")
    # full-precision weights, optimiser and RNG states, not only the exported float16 weights
    a, b = load_file(whole / "checkpoint" / "state.safetensors"), load_file(part / "checkpoint" / "state.safetensors")
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"resumed run differs from the uninterrupted one in {len(differ)} of {len(a)} tensors"
    assert (whole / "model.safetensors").read_bytes() == (part / "model.safetensors").read_bytes()
    training = json.loads((part / "config.json").read_text())["training"]
    assert training["steps"] == 6 and training["resumed"] == ["loom train again"]


def test_init_starts_a_new_run_from_an_earlier_runs_checkpoint(tmp_path):
    source = loom.train("vae", steps=40, seed=3, out=tmp_path / "source", command="loom train vae first", **TINY)
    # lr ~0: one step leaves the weights where they started, so the export shows the start
    tuned = loom.train(
        "vae",
        steps=1,
        seed=5,
        out=tmp_path / "tuned",
        init=source,
        pool=96,
        progress=False,
        options={"batch_size": 8, "prior_weight": 0.5, "lr": 1e-12},
    )
    a, b = load_file(source / "model.safetensors"), load_file(tuned / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    fresh = loom.train(
        "vae", steps=1, seed=5, out=tmp_path / "fresh", pool=96, progress=False, options={"batch_size": 8, "lr": 1e-12}
    )
    assert not all(torch.equal(a[k], v) for k, v in load_file(fresh / "model.safetensors").items())
    training = json.loads((tuned / "config.json").read_text())["training"]
    assert training["steps"] == 1 and training["seed"] == 5 and training["options"]["prior_weight"] == 0.5
    assert training["init_from"]["command"] == "loom train vae first" and training["init_from"]["step"] == 40
    # and resuming the fine-tune keeps that record, as does a fine-tune of the fine-tune
    loom.train("vae", steps=2, resume=tuned, progress=False)
    assert json.loads((tuned / "config.json").read_text())["training"]["init_from"]["step"] == 40
    again = loom.train(
        "vae", steps=1, out=tmp_path / "again", init=tuned, pool=96, progress=False, options={"batch_size": 8}
    )
    chain = json.loads((again / "config.json").read_text())["training"]["init_from"]
    assert chain["step"] == 2 and chain["init_from"]["command"] == "loom train vae first"
    # each run's minutes travel with it, so a fine-tune's training time can be added up (bench/families.py)
    assert chain["minutes"] >= 0 and chain["init_from"]["minutes"] > 0

    with pytest.raises(InputError, match="does not fit these options"):
        loom.train(
            "vae",
            steps=1,
            out=tmp_path / "wider",
            init=source,
            pool=96,
            progress=False,
            options={"batch_size": 8, "latent_dim": 16},
        )
    assert not (tmp_path / "wider").exists()
    with pytest.raises(InputError, match="is a 'vae' run, not 'gan'"):
        loom.train("gan", steps=1, out=tmp_path / "gan", init=source, **TINY)
    with pytest.raises(InputError, match="give one of them"):
        loom.train("vae", steps=50, resume=source, init=source, progress=False)


def test_a_run_planned_by_time_keeps_its_time_plan_when_resumed(tmp_path):
    out = loom.train("vae", minutes=0.05, out=tmp_path / "run", on_step=ctrl_c_at(2), **TINY)
    assert json.loads((out / "checkpoint" / "progress.json").read_text())["planned_minutes"] == 0.05
    # without its plan, the resumed run would fall back to the 3000-step default
    loom.train("vae", resume=out, progress=False)
    record = json.loads((out / "checkpoint" / "progress.json").read_text())
    assert record["planned_minutes"] == 0.05 and record["planned_steps"] is None
    assert record["step"] < 3000 and record["seconds"] >= 3.0


def test_init_from_a_bare_generator_folder_or_says_what_it_needs(tmp_path):
    import shutil

    source = loom.train("vae", steps=1, out=tmp_path / "source", **TINY)
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(InputError, match="neither a training checkpoint .* nor a trained generator"):
        loom.train("vae", steps=1, out=tmp_path / "a", init=bare, **TINY)
    assert not (tmp_path / "a").exists()
    # a bare generator folder (a shipped default) starts a run from its weights, for vae and gan
    shutil.copy(source / "config.json", bare / "config.json")
    shutil.copy(source / "model.safetensors", bare / "model.safetensors")
    tuned = loom.train(
        "vae", steps=1, out=tmp_path / "b", init=bare, pool=96, progress=False, options={"batch_size": 8, "lr": 1e-12}
    )
    a, b = load_file(bare / "model.safetensors"), load_file(tuned / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    gan = loom.train("gan", steps=1, out=tmp_path / "gan", **TINY)
    (tmp_path / "gan-bare").mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(gan / name, tmp_path / "gan-bare" / name)
    tuned = loom.train(
        "gan",
        steps=1,
        out=tmp_path / "gan-tuned",
        init=tmp_path / "gan-bare",
        pool=96,
        progress=False,
        options={"batch_size": 8, "lr": 1e-12, "ema": 0.0},
    )
    a, b = load_file(gan / "model.safetensors"), load_file(tuned / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_keep_every_keeps_loadable_snapshots_and_a_resumed_run_goes_on_keeping_them(tmp_path):
    out = loom.train("vae", steps=4, out=tmp_path / "run", keep_every=2, on_step=ctrl_c_at(3), **TINY)
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == ["step-000002"]
    loom.train("vae", resume=out, progress=False)
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == ["step-000002", "step-000004"]
    last, final = load_file(out / "snapshots/step-000004/model.safetensors"), load_file(out / "model.safetensors")
    assert all(torch.equal(last[k], final[k]) for k in final)
    early = json.loads((out / "snapshots/step-000002/config.json").read_text())
    assert early["family"] == "vae" and early["training"]["steps"] == 2
    image = loom.generate("a red circle", seed=0, generator=str(out / "snapshots/step-000002"), progress=False)
    assert image.output.to_numpy().shape[-1] == 3


def test_eval_snapshots_picks_the_best_on_validation_prompts_and_never_on_the_evaluation_ones(tmp_path, monkeypatch):
    from loom import evaluation

    out = loom.train("vae", steps=5, out=tmp_path / "run", keep_every=2, **TINY)
    seen = []

    class Report:
        def __init__(self, score):
            self.score = score

        def to_dict(self):
            return {"whole_prompt": self.score}

    def fake_eval(
        world, generator, n, seed, progress, split
    ):  # a score per folder and split, to see which one is chosen
        assert world.name == "shapes"  # the world the run trained on
        name = generator.rsplit("/", 1)[-1]
        if split == "templated":
            seen.append((name, n, seed))
        base = {"step-000002": 0.5, "step-000004": 0.75, "run": 0.25}.get(name, 0.5)
        return Report(base + (0.1 if split == "templated" else -0.1))  # chosen by the mean of both

    monkeypatch.setattr(evaluation, "evaluate_world", fake_eval)
    result = CliRunner().invoke(main, ["eval", "snapshots", str(out), "-n", "5"])
    assert result.exit_code == 0, result.output
    assert f"best: {out / 'snapshots/step-000004'} (0.750)" in result.output
    assert seen == [("step-000002", 5, evaluation.VALIDATION_SEED), ("step-000004", 5, 7), ("run", 5, 7)]
    picked = json.loads((out / "snapshots/picked.json").read_text())
    assert picked["best"] == str(out / "snapshots/step-000004") and picked["whole"]["run"] == pytest.approx(0.25)
    # asked again (as a run trains): snapshots scored on the same prompts keep their scores, the
    # final export is scored anew; other prompts score everything
    seen.clear()
    again = CliRunner().invoke(main, ["eval", "snapshots", str(out), "-n", "5"])
    assert again.exit_code == 0 and "(scored before)" in again.output and seen == [("run", 5, 7)]
    assert json.loads((out / "snapshots/picked.json").read_text())["whole"] == picked["whole"]
    seen.clear()
    assert CliRunner().invoke(main, ["eval", "snapshots", str(out), "-n", "6"]).exit_code == 0
    assert [name for name, _, _ in seen] == ["step-000002", "step-000004", "run"]
    # a final export that is also the last snapshot is scored once
    seen.clear()
    even = loom.train("vae", steps=2, out=tmp_path / "even", keep_every=1, **TINY)
    assert CliRunner().invoke(main, ["eval", "snapshots", str(even)]).exit_code == 0
    assert [name for name, _, _ in seen] == ["step-000001", "step-000002"]
    refused = CliRunner().invoke(main, ["eval", "snapshots", str(out), "--seed", str(evaluation.EVAL_SEED)])
    assert refused.exit_code != 0 and "is the evaluation seed" in refused.output
    bare = loom.train("vae", steps=1, out=tmp_path / "bare", **TINY)
    assert (
        "train with `loom train ... --keep-every N`"
        in CliRunner().invoke(main, ["eval", "snapshots", str(bare)]).output
    )


def test_eval_snapshots_scores_real_images_with_the_real_checker_and_picks_the_one_that_draws(tmp_path):
    """No mock: a run folder whose earlier snapshot holds the shipped vae's weights and whose later
    snapshot (also the final export) holds the same network with random weights. ShapesEval grades
    what each one generates; the earlier one must win, so a chooser that prefers the latest
    snapshot, scores one folder for all, or never looks at the images fails."""
    from safetensors.torch import save_file

    from loom.core import get_registry

    shipped = get_registry().get("vae").cls.default_weights
    config = json.loads((shipped / "config.json").read_text())
    trained = load_file(shipped / "model.safetensors")
    g = torch.Generator().manual_seed(0)
    untrained = {
        k: (torch.randn(v.shape, generator=g) * v.float().std().nan_to_num(0.02)).to(v.dtype)
        if v.is_floating_point()
        else v
        for k, v in trained.items()
    }
    run = tmp_path / "run"

    def export(folder, weights, steps):
        folder.mkdir(parents=True, exist_ok=True)
        save_file(weights, folder / "model.safetensors")
        (folder / "config.json").write_text(json.dumps({**config, "training": {**config["training"], "steps": steps}}))

    export(run / "snapshots" / "step-000002", trained, 2)
    export(run / "snapshots" / "step-000004", untrained, 4)
    export(run, untrained, 4)  # the final export is the last snapshot: scored once
    result = CliRunner().invoke(main, ["eval", "snapshots", str(run), "-n", "5"])
    assert result.exit_code == 0, result.output
    picked = json.loads((run / "snapshots" / "picked.json").read_text())
    assert picked["world"] == "shapes" and set(picked["whole"]) == {"step-000002", "step-000004"}, picked
    assert picked["whole"]["step-000002"] >= 0.6 and picked["whole"]["step-000004"] <= 0.1, picked
    assert picked["best"] == str(run / "snapshots" / "step-000002")
    assert f"best: {run / 'snapshots' / 'step-000002'} ({picked['whole']['step-000002']:.3f})" in result.output


def test_a_trained_folder_is_never_overwritten_by_a_new_run(tmp_path):
    out = loom.train("vae", steps=2, out=tmp_path / "run", **TINY)
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(InputError, match="already holds a trained model; continue it with --resume"):
        loom.train("vae", steps=2, out=out, **TINY)
    assert (out / "model.safetensors").read_bytes() == before


def write_folder(folder, n=4, captions="txt"):
    folder.mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        PILImage.fromarray(rng.integers(0, 255, (40 + i, 50, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
        text = f"a picture number {i}"
        if captions == "txt":
            (folder / f"img{i}.txt").write_text(text)
        else:
            lines.append(json.dumps({"file_name": f"img{i}.png", "text": text}))
    if captions == "jsonl":
        (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@pytest.mark.parametrize("captions", ["txt", "jsonl"])
def test_training_on_a_folder_of_captioned_images(tmp_path, captions):
    data = write_folder(tmp_path / "data", captions=captions)
    out = loom.train("vae", data=str(data), steps=3, out=tmp_path / "out", options={"batch_size": 4}, progress=False)
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["data"] == {"data": str(data.resolve()), "images": 4}
    from loom.data import FolderData

    pixels = FolderData(data, 64).pixels
    assert pixels.shape == (4, 64, 64, 3) and pixels.dtype == np.uint8


def bad_data_cases(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    yield empty, "holds no images"
    missing = write_folder(tmp_path / "missing")
    (missing / "img2.txt").unlink()
    yield missing, r"img2.png' has no caption: add img2.txt"
    truncated = write_folder(tmp_path / "truncated")
    data = (truncated / "img1.png").read_bytes()
    (truncated / "img1.png").write_bytes(data[: len(data) // 2])
    yield truncated, r"cannot read image .*img1.png"
    junk = write_folder(tmp_path / "junk")
    (junk / "img3.png").write_bytes(b"this is not an image")
    yield junk, r"cannot read image .*img3.png"
    jsonl = write_folder(tmp_path / "jsonl", captions="jsonl")
    (jsonl / "metadata.jsonl").write_text((jsonl / "metadata.jsonl").read_text() + "{not json\n")
    yield jsonl, r"metadata.jsonl: line 5 is not a JSON object"
    unlisted = write_folder(tmp_path / "unlisted", captions="jsonl")
    PILImage.new("RGB", (8, 8)).save(unlisted / "extra.png")
    yield unlisted, r"'extra.png' .* has no caption: metadata.jsonl does not list it"


def test_bad_data_names_the_file_and_touches_nothing(tmp_path):
    out = tmp_path / "out"
    for folder, message in bad_data_cases(tmp_path):
        with pytest.raises(InputError, match=message):
            loom.train("vae", data=str(folder), steps=1, out=out, progress=False)
        assert not out.exists()


def test_cli_train_reports_bad_data_in_one_line(tmp_path):
    data = write_folder(tmp_path / "data")
    (data / "img0.txt").unlink()
    res = CliRunner().invoke(
        main, ["train", "vae", "--data", str(data), "--steps", "1", "--out", str(tmp_path / "o"), "-q"]
    )
    assert res.exit_code == 1 and "img0.png' has no caption" in res.output
    res = CliRunner().invoke(main, ["train", "resize", "--steps", "1", "-q"])
    assert res.exit_code == 1 and "'resize' cannot be trained" in res.output and "vae" in res.output
    res = CliRunner().invoke(main, ["train", "vae", "-O", "nonsense=1", "--out", str(tmp_path / "o"), "-q"])
    assert res.exit_code == 1 and "nonsense" in res.output


def test_minutes_bounds_the_run_and_still_leaves_a_checkpoint(tmp_path):
    out = loom.train("vae", minutes=0.05, out=tmp_path / "timed", **TINY)
    progress = json.loads((out / "checkpoint" / "progress.json").read_text())
    assert 1 <= progress["step"] < 3000 and progress["seconds"] < 60
    assert json.loads((out / "config.json").read_text())["training"]["steps"] == progress["step"]


# -- sound families: the same workflow on Sounds log-mel spectrograms -----------------------------

SOUND_FAMILIES = ["vae-sound", "gan-sound"]
TINY_SOUNDS = dict(pool=48, options={"batch_size": 8}, progress=False)


@pytest.mark.parametrize("family", SOUND_FAMILIES)
def test_a_few_sound_steps_lower_the_loss_and_write_a_loadable_sound_generator(tmp_path, family):
    out = loom.train(family, "sounds", steps=30, seed=3, out=tmp_path / family, checkpoint_every=20, **TINY_SOUNDS)
    config = json.loads((out / "config.json").read_text())
    training = config["training"]
    assert config["family"] == family and training["steps"] == 30
    assert training["data"] == {"data": "sounds", "pool": 48, "data_seed": 3, "captions": "everyday"}
    assert training["final_loss"] < training["first_loss"], training
    assert config["sample_shape"] == [1, 64, 96] and config["mel"]["frames"] == 96 and config["mel"]["samples"] == 24000
    if family == "vae-sound":  # sampling draws z from a Gaussian fitted to the posterior means
        assert len(config["latent_mean"]) == 8 and len(config["latent_chol"]) == 8 and config["latent_spread"] == 0.6
    from loom.plugins.sounds import SOUNDS_SAMPLE_PROMPTS

    # one log-mel spectrogram (64 mels × 96 frames) per sample prompt
    sample_cells(out / "samples.png", len(SOUNDS_SAMPLE_PROMPTS), 64, 96)
    assert_loss_curve_falls(out / "loss.png")
    result = loom.generate("three rising high beeps", seed=0, generator=str(out), size=None, progress=False)
    audio = result.output
    assert audio.waveforms.shape == (1, 1, 24000) and audio.sample_rate == 16000
    assert float(audio.waveforms.abs().max()) <= 1.0
    step = result.provenance["spec"]["steps"][-1]
    assert step["component"] == family and step["config"]["weights"] == str(out.resolve())
    loom.save(result, tmp_path / "beeps.wav")
    import soundfile

    from loom.outputs import pcm16
    from loom.plugins.sounds import DURATION, SAMPLE_RATE

    pcm, rate = soundfile.read(tmp_path / "beeps.wav", dtype="int16", always_2d=True)
    assert rate == SAMPLE_RATE and pcm.shape == (int(DURATION * SAMPLE_RATE), 1)  # 1.5 s, mono
    assert np.array_equal(pcm, pcm16(audio, 0))  # exactly the generated clip, as 16-bit PCM
    # not digital silence: 30 steps in, a model is quiet (about -76 dBFS, peaks of 21-26 LSB, about
    # 80% of samples nonzero, measured) but not mute (a trained one is loud: tests/test_shipped_models.py)
    nonzero, peak = np.count_nonzero(pcm), int(np.abs(pcm.astype(int)).max())
    assert nonzero > len(pcm) // 4 and peak >= 4, (nonzero, peak)


def test_an_interrupted_sound_run_resumes_to_the_same_weights_and_latent_fit(tmp_path):
    whole = loom.train("vae-sound", "sounds", steps=6, out=tmp_path / "whole", **TINY_SOUNDS)

    part = loom.train("vae-sound", "sounds", steps=6, out=tmp_path / "part", on_step=ctrl_c_at(3), **TINY_SOUNDS)
    loom.train("vae-sound", resume=part, progress=False)
    a, b = load_file(whole / "checkpoint" / "state.safetensors"), load_file(part / "checkpoint" / "state.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (whole / "model.safetensors").read_bytes() == (part / "model.safetensors").read_bytes()
    fit = [json.loads((f / "config.json").read_text())["latent_chol"] for f in (whole, part)]
    assert fit[0] == fit[1]


def test_sounds_data_are_log_mel_images_in_the_unit_range():
    from loom.plugins.common.mel import MelCodec
    from loom.plugins.sounds import SoundsData, SoundsDataset

    data = SoundsData((1, 64, 96), pool=4, seed=5)
    assert data.pixels.shape == (4, 64, 96, 1) and data.pixels.dtype == np.uint8
    assert data.captions == [SoundsDataset(5, training=True).item(i).caption for i in range(4)]
    assert (data.pixels[:, :, 94:] == 0).all()  # the padding frames are silence
    mel = MelCodec().encode(torch.from_numpy(SoundsDataset(5, training=True).item(0).waveform[None]))[0].numpy()
    assert np.abs(data.pixels[0, :, :94, 0] / 255 * 2 - 1 - mel).max() <= 1 / 255 + 1e-6


def test_data_that_does_not_fit_the_family_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"'vae-sound' trains on sounds: give --data sounds"):
        loom.train("vae-sound", "shapes", steps=1, out=out, progress=False)
    with pytest.raises(
        InputError, match=r"'gan' trains on images .* train a sound family on --data sounds \(gan-sound, vae-sound\)"
    ):
        loom.train("gan", "sounds", steps=1, out=out, progress=False)
    assert not out.exists()
    res = CliRunner().invoke(
        main, ["train", "vae-sound", "--data", str(tmp_path), "--steps", "1", "--out", str(out), "-q"]
    )
    assert res.exit_code == 1 and "give --data sounds" in res.output


def test_ship_to_a_folder_stages_a_run_and_leaves_the_default_alone(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from loom.core import get_registry

    root = Path(__file__).resolve().parents[1]
    run = loom.train("vae", steps=2, seed=3, out=tmp_path / "run", command="loom train vae tiny", **TINY)
    default = Path(get_registry().get("vae").cls.default_weights) / "model.safetensors"
    before = default.read_bytes()
    staged = tmp_path / "staged"
    done = subprocess.run(
        [sys.executable, str(root / "scripts" / "ship.py"), "vae", str(run), "--to", str(staged)],
        capture_output=True,
        text=True,
        cwd=root,
    )
    assert done.returncode == 0, done.stderr
    assert default.read_bytes() == before
    record = (staged / "TRAINING.md").read_text()
    assert "loom train vae tiny" in record and f"--to {staged}" in record
    result = loom.generate(
        "a red circle on a blue background", seed=0, generator=str(staged), size=None, progress=False
    )
    assert result.output.pixels.shape == (1, 3, 64, 64)


def _load_script(folder: str, name: str):
    """A module of scripts/ or bench/ (not a package), loaded from its file."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        name.removesuffix(".py"), Path(__file__).resolve().parents[1] / folder / name
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ship_names_the_origin_of_every_part_of_a_start(tmp_path):
    ship = _load_script("scripts", "ship.py")
    unet_from = {
        "folder": "plugins/diffusion/weights",
        "command": "loom train diffusion --out runs/ldm",
        "seed": 1,
        "steps": 900,
        "minutes": 120,
    }
    # a start written before init_from kept origins: its folder's record (same command, same step) supplies it
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "config.json").write_text(
        json.dumps(
            {"training": {"command": "loom train diffusion -O unet_init=x", "steps": 40, "unet_from": unet_from}}
        )
    )
    start = {
        "folder": str(staged),
        "command": "loom train diffusion -O unet_init=x",
        "seed": 7,
        "step": 40,
        "minutes": 3,
    }
    assert ship._fill_start(start) and start["unet_from"] == unet_from
    text = ship._origin(start)
    assert f"started from `{staged}` at its step 40" in text
    assert (
        "its UNet started from the UNet of `plugins/diffusion/weights` at its step 900" in text
        and "loom train diffusion --out runs/ldm" in text
    )
    # another run's record in that folder is not taken for the start's
    other = {**start, "step": 41}
    other.pop("unet_from")
    assert not ship._fill_start(other) and "unet_from" not in other


def test_families_bench_adds_up_the_whole_chain_with_the_unets_origin():
    families = _load_script("bench", "families.py")
    unet_from = {"steps": 100, "minutes": 10.0, "init_from": {"step": 50, "minutes": 5.0}}
    training = {"steps": 7, "minutes": 1.0, "init_from": {"step": 20, "minutes": 2.0, "unet_from": unet_from}}
    assert families.chain_totals(training) == {"train_minutes": 18.0, "train_steps": 177}
    unet_from["init_from"].pop("minutes")
    assert families.chain_totals(training) == {"train_minutes": None, "train_steps": 177}
