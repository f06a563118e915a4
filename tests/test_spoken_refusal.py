"""Spoken prompts say what they heard (issue 32): the record and `loom generate` keep the heard
text, and silence, noise and tones (no Shapes word heard with confidence) are refused with one
clear line, nothing written, instead of drawn from made-up words."""

from __future__ import annotations

import math

import pytest
import torch
from click.testing import CliRunner

import loom
from loom.cli import main
from loom.core import Audio, Embedding, InputError, Text
from loom.outputs import read_record, write

PROMPT = "a large red circle in the center on a blue background"
#: What the recogniser hears when PROMPT is said: its vocabulary spells "centre".
HEARD = PROMPT.replace("center", "centre")
RATE = 16000


def clip(kind: str, seconds: float = 2.0) -> Audio:
    """A clip with no Shapes words in it: silence, white noise at a level, or a tone."""
    n = int(seconds * RATE)
    if kind == "silence":
        wave = torch.zeros(n)
    elif kind.startswith("white"):
        wave = (torch.randn(n, generator=torch.Generator().manual_seed(7)) * float(kind[5:])).clamp(-1, 1)
    else:  # "sine440"
        wave = 0.5 * torch.sin(2 * math.pi * float(kind[4:]) * torch.arange(n) / RATE)
    return Audio(wave[None, None], RATE)


def test_embedding_text_is_kept_by_take_and_concat():
    def emb(words, text=True):
        n = len(words)
        return Embedding(torch.zeros(n, 2, 3), torch.ones(n, 2), "e", text=list(words) if text else None)

    ab = Embedding.concat([emb(["a"]), emb(["b", "c"])])
    assert ab.text == ["a", "b", "c"] and ab.take([2, 0, 2]).text == ["c", "a", "c"]
    # a join keeps the text only when every part has it, like the optional tensors
    assert Embedding.concat([emb(["a"]), emb(["b"], text=False)]).text is None
    assert emb(["a"], text=False).take([0]).text is None


@pytest.fixture(scope="module")
def said(tmp_path_factory):
    """A spoken prompt made by the `speech` generator, through the CLI as a user makes one."""
    path = tmp_path_factory.mktemp("said") / "said.wav"
    res = CliRunner().invoke(main, ["generate", PROMPT, "--generator", "speech", "-o", str(path), "--seed", "3", "-q"])
    assert res.exit_code == 0, res.output
    return path


@pytest.mark.slow
def test_generate_prints_and_records_what_it_heard(said, tmp_path):
    out = tmp_path / "out.png"
    res = CliRunner().invoke(main, ["generate", "--prompt-audio", str(said), "-o", str(out), "--seed", "0", "-q"])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == str(out)  # stdout keeps to the paths; the heard line goes to stderr
    assert f'heard: "{HEARD}"' in res.stderr.splitlines()
    assert read_record(out)["heard"] == [HEARD]
    # a typed prompt's chain takes no audio: nothing heard, nothing recorded as heard
    typed = loom.generate(PROMPT, 0, progress=False)
    assert "heard" not in typed.provenance and "heard" not in typed.record(0)


@pytest.mark.slow
def test_a_batch_records_each_item_heard_and_names_the_one_refused(said):
    from loom.outputs import read_audio

    spoken = read_audio(said)
    both = Audio.concat([spoken, Audio(torch.zeros(1, 1, spoken.waveforms.shape[-1]), spoken.sample_rate)])
    result = loom.generate(prompt_audio=spoken, seed=0, progress=False, count=2)
    assert result.provenance["heard"] == [HEARD, HEARD] and result.record(1)["heard"] == [HEARD]
    with pytest.raises(InputError, match=r"^input 2 of 2: spoken prompt: heard no Shapes words with confidence"):
        loom.generate(prompt_audio=both, seed=0, progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["silence", "white0.003", "white0.05", "white0.5", "sine440"])
def test_silence_noise_and_a_tone_are_refused_and_nothing_is_written(kind, tmp_path):
    wav, out = tmp_path / f"{kind}.wav", tmp_path / "out.png"
    write(clip(kind), 0, wav)
    out.write_bytes(b"an older picture")
    res = CliRunner().invoke(main, ["generate", "--prompt-audio", str(wav), "-o", str(out), "--seed", "0", "-q"])
    assert res.exit_code == 1, res.output
    line = res.output.strip()
    assert line.startswith("error: spoken prompt: heard no Shapes words with confidence (silence or noise?)"), line
    assert "speak a Shapes caption" in line and "Traceback" not in res.output and "\n" not in line
    assert out.read_bytes() == b"an older picture" and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [wav.name, out.name]
    )


@pytest.mark.slow
def test_the_threshold_sits_between_spoken_prompts_and_noise():
    """The measurement behind MIN_CONFIDENCE, kept small: Piper prompts over captions and seeds
    all pass, with room to spare; every clip without words falls under it."""
    from loom.plugins.speech import Speech
    from loom.plugins.spoken import MIN_CONFIDENCE, SpokenPrompt

    captions = [PROMPT, "a small green square", "on a yellow background, a large green triangle at the bottom right"]
    spoken = Speech().load()(Text(captions * 2), seed=[0, 1, 2, 10, 11, 12])
    encoder = SpokenPrompt().load()
    heard = encoder.hear(spoken)
    assert min(sure for _, sure in heard) > MIN_CONFIDENCE + 0.03, heard
    quiet = encoder.hear(Audio(spoken.waveforms * 0.02, spoken.sample_rate, spoken.lengths))  # about -34 dB
    assert min(sure for _, sure in quiet) > MIN_CONFIDENCE, quiet
    for kind in ["silence", "white0.001", "white0.01", "white0.1", "white0.9", "sine100", "sine1000", "sine3000"]:
        ((text, sure),) = encoder.hear(clip(kind))
        assert sure < MIN_CONFIDENCE - 0.03, (kind, text, sure)
    # the switch works: 0 hears anything, so the clip is drawn from whatever it made of it
    assert len(SpokenPrompt(min_confidence=0).load()(clip("white0.1"), seed=0)) == 1
