"""Audio through Loom end to end without trained models: the Audio type's batches of different
lengths, WAV and FLAC files with the provenance record (any size), `loom reproduce` giving
identical samples, mixed-modality chains type-checked before anything loads, the CLI choosing
the file type from the chain's output, `loom run` and `loom batch` writing WAV, and
`loom eval sounds` on a generator that returns ground-truth clips (tests/audio_fakes.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import fakes
import numpy as np
import pytest
import soundfile
import torch
from audio_fakes import LOADED, audio_registry
from click.testing import CliRunner

import loom
import loom.api
import loom.core.plugins
from loom.batch_jobs import batch, read_manifest
from loom.chains import Pipeline
from loom.cli import main
from loom.core import Audio, Generator, InputError, ProvenanceError, Text, TypeMismatchError, hookimpl
from loom.outputs import pcm16, read_audio, read_record, save_audio, write
from loom.records import digest


@pytest.fixture
def registry(monkeypatch):
    """The audio fakes, the image fakes and Loom's postprocessors as the process-wide registry."""
    LOADED.clear()
    fakes.LOADED.clear()
    registry = audio_registry()
    monkeypatch.setattr(loom.core.plugins, "_registry", registry)
    monkeypatch.setattr(loom.api, "_pipelines", {})
    return registry


def samples(path) -> np.ndarray:
    data, _ = soundfile.read(path, dtype="int16", always_2d=True)
    return data


# ------------------------------------------------------------------ the Audio type


def test_items_of_different_lengths_share_a_batch_and_keep_their_samples():
    a, b, c = torch.ones(1, 5) * 0.1, torch.ones(1, 3) * 0.2, torch.ones(1, 5) * 0.3
    audio = Audio.from_clips([a, b, c], 8000)
    assert audio.waveforms.shape == (3, 1, 5) and audio.lengths == [5, 3, 5]
    assert torch.equal(audio.clip(1), b) and float(audio.waveforms[1, 0, 3:].abs().sum()) == 0.0
    alone = audio.take([1])
    assert alone.waveforms.shape == (1, 1, 3) and alone.lengths is None  # exactly its own samples
    joined = Audio.concat([alone, audio.take([0])])
    assert joined.waveforms.shape == (2, 1, 5) and joined.lengths == [3, 5]
    assert Audio.from_clips([a, c], 8000).lengths is None  # all full length: the plain form
    with pytest.raises(ValueError, match="different sample rates"):
        Audio.concat([alone, Audio(torch.zeros(1, 1, 3), 16000)])
    with pytest.raises(ValueError, match="must each lie between 0 and the 5 samples"):
        Audio(torch.zeros(1, 1, 5), 8000, [6])


def test_pcm16_is_rounded_and_clipped_the_same_way_every_time():
    audio = Audio(torch.tensor([[[0.0, 0.5, -0.5, 1.5, -2.0, 1 / 32767 * 0.6]]]), 8000)
    assert pcm16(audio, 0)[:, 0].tolist() == [0, 16384, -16384, 32767, -32767, 1]


# ------------------------------------------------------------------ files and records


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
@pytest.mark.parametrize("record_chars", [300, 50_000])
def test_audio_files_carry_records_of_any_size(tmp_path, suffix, record_chars):
    record = {"loom_record": 1, "inputs": ["two low rising buzzes"], "note": "ü" + "x" * record_chars}
    audio = Audio(torch.stack([torch.linspace(-1, 1, 800), torch.linspace(1, -1, 800)])[None], 8000)
    path = write(audio, 0, tmp_path / f"clip{suffix}", record)
    assert read_record(path) == record
    again = read_audio(path)
    assert again.sample_rate == 8000 and again.waveforms.shape == (1, 2, 800)
    assert torch.allclose(again.waveforms, audio.waveforms, atol=1 / 32767)
    assert np.array_equal(samples(path), pcm16(audio, 0))


def test_a_wav_from_elsewhere_has_no_record_and_other_files_are_refused(tmp_path):
    plain = tmp_path / "plain.wav"
    soundfile.write(plain, np.zeros(100), 8000)
    with pytest.raises(ProvenanceError, match="carries no Loom provenance record"):
        read_record(plain)
    commented = tmp_path / "commented.flac"
    with soundfile.SoundFile(commented, "w", 8000, 1, "PCM_16", format="FLAC") as f:
        f.comment = "recorded in the garden"
        f.write(np.zeros(100, dtype=np.int16))
    with pytest.raises(ProvenanceError, match="its comment is not Loom's"):
        read_record(commented)
    (tmp_path / "junk.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk")
    with pytest.raises(ProvenanceError, match="truncated: it ends inside a chunk header"):
        read_record(tmp_path / "junk.wav")
    (tmp_path / "cut.wav").write_bytes(b"RIFF\x20\x00\x00\x00WAVEdata\xe8\x03\x00\x00" + bytes(10))
    with pytest.raises(ProvenanceError, match="truncated: its 'data' chunk runs past the end"):
        read_record(tmp_path / "cut.wav")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ProvenanceError, match="not a file Loom writes"):
        read_record(tmp_path / "notes.txt")
    with pytest.raises(InputError, match="use a name ending in .wav or .flac"):
        save_audio(np.zeros((10, 1), np.int16), 8000, tmp_path / "clip.mp3")


def test_a_failed_audio_write_leaves_no_file(tmp_path, monkeypatch):
    def broken_write(self, data):
        raise OSError("disk full")

    monkeypatch.setattr(soundfile.SoundFile, "write", broken_write)
    with pytest.raises(InputError, match="clip.wav.*disk full"):
        write(Audio(torch.zeros(1, 1, 10), 8000), 0, tmp_path / "clip.wav", {"loom_record": 1})
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ chains across modalities


def test_mixed_modality_chains_build_and_run(registry):
    text_to_audio = Pipeline.from_steps("truth-sounds", ("trim", {"keep_ms": 0}), "fade", "loudness", registry=registry)
    assert (text_to_audio.input_type, text_to_audio.output_type) == (Text, Audio)
    out = text_to_audio.run(["two low rising buzzes", "one high steady hiss"], seed=1, progress=False).output
    assert isinstance(out, Audio) and out.lengths is not None and out.lengths[0] != out.lengths[1]

    audio_to_image = Pipeline.from_steps("listen", ("noise", {"size": 4}), "invert", registry=registry)
    image = audio_to_image.run(out, seed=2, progress=False).output
    assert image.pixels.shape == (2, 3, 4, 4)

    speech_to_image = Pipeline.from_steps("speak", "listen", ("noise", {"size": 4}), registry=registry)
    result = speech_to_image.run(["a red circle", "a blue square on the left"], seed=3, progress=False)
    assert result.output.pixels.shape == (2, 3, 4, 4) and result.provenance["inputs"] == [
        "a red circle",
        "a blue square on the left",
    ]


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (
            ["truth-sounds", "resize"],
            r"step 2 \('resize'\) takes Image, but step 1 \('truth-sounds'\) gives Audio; components that take Audio: "
            r"listen, fade, loudness, quieter, resample, trim",
        ),
        (["hash-encoder", "noise", "fade"], r"step 3 \('fade'\) takes Audio, but step 2 \('noise'\) gives Image"),
        (["speak", "noise"], r"step 2 \('noise'\) takes Embedding, but step 1 \('speak'\) gives Audio"),
        (["speak", "listen", "trim"], r"step 3 \('trim'\) takes Audio, but step 2 \('listen'\) gives Embedding"),
    ],
)
def test_a_mismatched_step_is_named_before_anything_loads(registry, steps, message):
    with pytest.raises(TypeMismatchError, match=message):
        Pipeline.from_steps(*steps, registry=registry)
    assert LOADED == [] and fakes.LOADED == []


def test_the_default_chain_follows_the_generators_types(registry):
    assert loom.default_spec("truth-sounds") == {"steps": [{"component": "truth-sounds"}]}
    assert loom.default_spec("noise")["steps"] == [
        {"component": "text-encoder:text-encoder"},
        {"component": "noise"},
        {"component": "image-postprocessors:resize", "config": {"size": 256}},
    ]
    assert loom.default_spec("nope")["steps"][1] == {"component": "nope"}  # the chain then names the unknown step


# ------------------------------------------------------------------ the command line


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_generate_writes_audio_and_reproduce_gives_identical_samples(registry, tmp_path, suffix):
    out, again = tmp_path / f"clip{suffix}", tmp_path / f"again{suffix}"
    runner = CliRunner()
    res = runner.invoke(
        main,
        [
            "generate",
            "a deep steady buzz beeping twice",
            "--generator",
            "seeded-tone",
            "-o",
            str(out),
            "--seed",
            "7",
            "-q",
        ],
    )
    assert res.exit_code == 0, res.output
    record = read_record(out)
    assert record["inputs"] == ["a deep steady buzz beeping twice"] and record["seeds"] == [7]
    assert [s["component"] for s in record["spec"]["steps"]] == ["seeded-tone"]
    res = runner.invoke(main, ["reproduce", str(out), "-o", str(again), "-q"])
    assert res.exit_code == 0, res.output
    assert np.array_equal(samples(out), samples(again)) and len(samples(out)) == 2000
    res = runner.invoke(
        main,
        [
            "generate",
            "a deep steady buzz beeping twice",
            "--generator",
            "seeded-tone",
            "-o",
            str(tmp_path / f"other{suffix}"),
            "--seed",
            "8",
            "-q",
        ],
    )
    assert not np.array_equal(samples(out), samples(tmp_path / f"other{suffix}"))  # the seed matters


def test_a_large_record_survives_wav_and_replays(registry, tmp_path):
    spec = tmp_path / "chain.yaml"
    spec.write_text(
        json.dumps({"steps": [{"component": "seeded-tone", "config": {"note": "n" * 20_000}}, {"component": "fade"}]})
    )
    res = CliRunner().invoke(
        main, ["run", str(spec), "-p", "three high falling buzzes", "-o", str(tmp_path / "out"), "--seed", "4", "-q"]
    )
    assert res.exit_code == 0, res.output
    wav = tmp_path / "out" / "0001.wav"
    assert read_record(wav)["spec"]["steps"][0]["config"]["note"] == "n" * 20_000
    res = CliRunner().invoke(main, ["reproduce", str(wav), "-o", str(tmp_path / "again.wav"), "-q"])
    assert res.exit_code == 0, res.output
    assert np.array_equal(samples(wav), samples(tmp_path / "again.wav"))


def test_the_output_suffix_must_fit_the_chains_output(registry, tmp_path):
    runner = CliRunner()
    res = runner.invoke(
        main, ["generate", "two low rising buzzes", "--generator", "truth-sounds", "-o", str(tmp_path / "x.png"), "-q"]
    )
    assert res.exit_code == 1
    assert "this chain gives Audio, written as WAV or FLAC files; use a name ending in .wav or .flac" in res.output
    res = runner.invoke(main, ["generate", "a red circle", "--generator", "noise", "-o", str(tmp_path / "x.wav"), "-q"])
    assert (
        res.exit_code == 1 and "this chain gives Image, written as PNG files; use a name ending in .png" in res.output
    )
    assert LOADED == [] and fakes.LOADED == []  # refused before any weights load
    res = runner.invoke(
        main, ["generate", "two low rising buzzes", "--generator", "truth-sounds", "-o", str(tmp_path / "x.wav"), "-q"]
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["reproduce", str(tmp_path / "x.wav"), "-o", str(tmp_path / "y.png"), "-q"])
    assert res.exit_code == 1 and "use a name ending in .wav or .flac" in res.output
    spec = tmp_path / "chain.json"
    spec.write_text(json.dumps({"steps": [{"component": "truth-sounds"}]}))
    res = runner.invoke(main, ["run", str(spec), "-p", "one beep", "-o", str(tmp_path / "o"), "--format", "png", "-q"])
    assert res.exit_code == 1 and "this chain gives Audio" in res.output
    assert not (tmp_path / "o").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["chain.json", "x.wav"]


def test_run_writes_wav_or_flac_for_an_audio_spec(registry, tmp_path):
    spec = tmp_path / "chain.yaml"
    spec.write_text("steps:\n  - component: truth-sounds\n  - component: loudness\n    config: {target_db: -20}\n")
    res = CliRunner().invoke(
        main,
        [
            "run",
            str(spec),
            "-p",
            "two low rising buzzes",
            "-p",
            "one shrill hiss, steady",
            "-o",
            str(tmp_path / "out"),
            "--seed",
            "1",
            "-q",
        ],
    )
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0001.wav", "0002.wav"]
    res = CliRunner().invoke(
        main,
        [
            "run",
            str(spec),
            "-p",
            "two low rising buzzes",
            "-o",
            str(tmp_path / "flac"),
            "--format",
            "flac",
            "--seed",
            "1",
            "-q",
        ],
    )
    assert res.exit_code == 0, res.output
    assert np.array_equal(samples(tmp_path / "flac" / "0001.flac"), samples(tmp_path / "out" / "0001.wav"))


def test_eval_sounds_scores_a_ground_truth_generator(registry):
    # the ground-truth fake renders full captions only: the templated split
    res = CliRunner().invoke(
        main, ["eval", "sounds", "--generator", "truth-sounds", "-n", "40", "--split", "templated", "--json"]
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["n"] == 40 and data["whole_prompt"] >= 0.97, data
    from loom.plugins.sounds import ATTRIBUTES, DISTRIBUTION

    # chance of the whole caption: a uniform guess of every attribute at once
    whole_chance = float(np.prod([1 / len(DISTRIBUTION[a]) for a in ATTRIBUTES]))
    assert data["chance"]["whole_prompt"] == pytest.approx(whole_chance)
    res = CliRunner().invoke(main, ["eval", "sounds", "--generator", "truth-sounds", "-n", "6", "--split", "templated"])
    assert res.exit_code == 0, res.output
    attribute_chance = 1 / len(DISTRIBUTION["pitch"])
    assert "SoundsEval on 6 prompts (generator: truth-sounds)" in res.output
    assert f"(chance {attribute_chance:.3f})" in res.output
    assert "whole caption" in res.output and f"(chance {whole_chance:.4f})" in res.output
    res = CliRunner().invoke(main, ["eval", "sounds", "--generator", "noise", "-n", "2"])
    assert res.exit_code == 1 and "gives Image, not Audio" in res.output


class FixedSound(Generator):
    """Text → Audio that ignores its caption: always two steady medium buzzes (jittered per seed)."""

    input_type = Text
    output_type = Audio
    SOUND = {"pitch": "medium", "timbre": "buzz", "count": 2, "motion": "steady"}

    def run(self, inputs, generators):
        from loom.plugins.sounds import SAMPLE_RATE, Sound, render

        seeds = [int(torch.randint(0, 2**31 - 1, (1,), generator=g)) for g in generators]
        clips = [render(Sound(**self.SOUND), SAMPLE_RATE, np.random.default_rng(s))[None] for s in seeds]
        return Audio.from_clips(clips, SAMPLE_RATE)


class NoiseSound(Generator):
    """Text → Audio that ignores its caption: 1.5 s of loud white noise from the item's seed."""

    input_type = Text
    output_type = Audio

    def run(self, inputs, generators):
        waves = [0.3 * torch.randn(1, 24000, generator=g) for g in generators]
        return Audio(torch.stack(waves).clamp(-1, 1), 16000)


@pytest.mark.slow
def test_eval_sounds_scores_generators_that_ignore_the_caption_at_chance(registry):
    """The same command that scores the ground-truth fake ~1 cannot be satisfied without reading
    the caption: a fixed sound scores exactly the share of prompts that happen to ask for it, and
    noise nothing beyond chance; neither spreads what a prompt leaves open."""
    from loom.evaluation import EVAL_SEED, world_prompts
    from loom.plugins.sounds import ATTRIBUTES, parse_caption

    @hookimpl
    def loom_register_components(register):
        register("fixed-sound", FixedSound)
        register("noise-sound", NoiseSound)

    plugin = SimpleNamespace(loom_register_components=loom_register_components, __name__="ignoring")
    assert registry.add_plugin(plugin, "ignoring").ok
    n = 40
    for generator in ("fixed-sound", "noise-sound"):
        res = CliRunner().invoke(main, ["eval", "sounds", "--generator", generator, "-n", str(n), "--json"])
        assert res.exit_code == 0, res.output
        data = json.loads(res.output)
        for split in ("templated", "underspecified"):
            part = data[split]
            assert part["n"] == n
            assert part["whole_prompt"] <= max(0.1, 2 * part["chance"]["whole_prompt"]), (generator, split, part)
            assert part["unseen"]["whole_prompt"] <= 0.1, (generator, split, part["unseen"])
            for a in ATTRIBUTES:
                assert part["per_attribute"][a] <= part["chance"][a] + 0.25, (generator, split, a, part)
            if generator == "fixed-sound":
                # what it should score, from the prompts alone: the share asking for its values
                stated = [parse_caption(text) for text, _ in world_prompts("sounds", n, EVAL_SEED, split)]
                fixed = FixedSound.SOUND
                for a in ATTRIBUTES:
                    asked = [getattr(s, a) for s in stated if getattr(s, a) is not None]
                    share = sum(v == fixed[a] for v in asked) / len(asked)
                    assert part["per_attribute"][a] == pytest.approx(share, abs=0.05), (split, a, part)
                whole = sum(all(getattr(s, a) in (None, fixed[a]) for a in ATTRIBUTES) for s in stated) / n
                assert part["whole_prompt"] == pytest.approx(whole, abs=0.05), (split, part)
        assert data["diversity"]["diversity"] <= 0.05, (generator, data["diversity"])


def test_eval_sounds_reads_a_prompts_file(registry, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("two low rising buzzes\nthree beeps\n")
    res = CliRunner().invoke(
        main, ["eval", "sounds", "--generator", "truth-sounds", "--prompts", str(prompts), "--json"]
    )
    assert (
        res.exit_code == 1 and "does not state the sound's" in res.output
    )  # the ground-truth fake needs full captions
    prompts.write_text("two low rising buzzes\na single medium steady pure tone\n")
    res = CliRunner().invoke(
        main, ["eval", "sounds", "--generator", "truth-sounds", "--prompts", str(prompts), "--json"]
    )
    assert res.exit_code == 0 and json.loads(res.output)["whole_prompt"] == 1.0


def test_batch_writes_wav_resumes_and_remakes_damaged_outputs(registry, tmp_path):
    prompts = ["two low rising buzzes", "one shrill hiss, steady", "three medium falling pure tones"]
    report = batch("truth-sounds", prompts, tmp_path, batch_size=2, progress=False, registry=registry)
    assert (report.made, report.failed) == (3, 0)
    names = sorted(p.name for p in tmp_path.glob("*.wav"))
    assert names == ["000001.wav", "000002.wav", "000003.wav"]
    first = samples(tmp_path / "000001.wav")
    assert read_record(tmp_path / "000002.wav")["inputs"] == [prompts[1]]
    damaged = tmp_path / "000003.wav"
    damaged.write_bytes(damaged.read_bytes()[:-500])
    again = batch("truth-sounds", prompts, tmp_path, batch_size=3, progress=False, registry=registry)
    assert (again.made, again.skipped) == (1, 2)
    assert [r["status"] for r in read_manifest(again.manifest)] == ["skipped", "skipped", "ok"]
    assert np.array_equal(samples(tmp_path / "000001.wav"), first)
    alone = batch("truth-sounds", prompts[:1], tmp_path / "alone", batch_size=1, progress=False, registry=registry)
    assert alone.made == 1
    assert (tmp_path / "alone" / "000001.wav").read_bytes() == (tmp_path / "000001.wav").read_bytes()


def test_an_items_digest_is_the_same_alone_or_in_any_batch():
    from loom.core import Audio

    short, long = torch.ones(1, 1, 50) * 0.5, torch.linspace(-1, 1, 80).view(1, 1, 80)
    batch = Audio.concat([Audio(long, 16000), Audio(short, 16000)])
    alone = Audio(short, 16000)
    assert digest(batch, 1) == digest(alone, 0) != digest(batch, 0)
    assert digest(Audio(short, 22050), 0) != digest(alone, 0)  # the rate counts
    assert digest(Audio(short + 1e-6, 16000), 0) != digest(alone, 0)
