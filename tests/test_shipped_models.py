"""Each shipped default generator, measured by the project's own evaluator."""

import json

import numpy as np
import pytest
from PIL import Image as PILImage

from loom.core import get_registry
from loom.evaluation import evaluate_shapes

pytestmark = pytest.mark.slow

#: Whole-prompt floors on the prompt sample used here (:data:`PROMPTS`). The measured scores on 200 fresh
#: prompts are in README.md (bench/families.py); each floor sits a margin below its family's.
#: Since ShapesEval counts an object nobody asked for as a miss (issue 29), ar measured 0.54 here
#: before its retraining (VQ artefacts make extra regions; every attribute >= 0.87) and the diffusion model
#: fine-tuned on everyday captions 0.87. On 200 (bench/results/families_shapes_2026-12-07.md): vae 0.840,
#: gan 0.845 (both through their prompt completion), ar 0.760 (retrained on everyday captions), diffusion 0.885.
#: On 200 (bench/results/families_shapes_2026-12-08.md): diffusion 0.895, diffusion-fast 0.900 (2 steps).
FLOORS = {"vae": 0.75, "gan": 0.78, "ar": 0.6, "diffusion": 0.80, "diffusion-fast": 0.80}


#: Prompts per split: the ar and diffusion models take 0.3-0.6 s a prompt on 2 threads, so they are
#: held on the first 60 of the same prompts (the suite's time; the bench measures them on 200).
PROMPTS = {"vae": 100, "gan": 100, "ar": 60, "diffusion": 60, "diffusion-fast": 100}


@pytest.mark.parametrize("family", sorted(FLOORS))
def test_shipped_default_scores_above_its_floor_on_fresh_prompts(family):
    report = evaluate_shapes(family, n=PROMPTS[family], progress=False)
    assert report.n == PROMPTS[family]
    assert report.whole_prompt >= FLOORS[family], report.to_dict()
    assert report.per_attribute["background"] >= 0.9, report.to_dict()


#: Floors on the first underspecified prompts (everyday phrasings no training caption uses). vae and gan
#: read them through their prompt completion (measured here: vae 0.89, gan 0.88; the models alone
#: stay near 0.1, see docs/families.md); ar was retrained on everyday captions (on the 200 of the bench,
#: whose first 100 are these: 0.555). diffusion and diffusion-fast read them through the completion too
#: (on the 200: 0.950 and 0.945; as typed 0.550 and 0.365).
UNDERSPECIFIED_FLOORS = {"vae": 0.8, "gan": 0.8, "ar": 0.42, "diffusion": 0.85, "diffusion-fast": 0.85}


@pytest.mark.parametrize("family", sorted(UNDERSPECIFIED_FLOORS))
def test_shipped_default_draws_prompts_that_leave_attributes_unsaid(family):
    report = evaluate_shapes(family, n=PROMPTS[family], split="underspecified", progress=False)
    assert report.whole_prompt >= UNDERSPECIFIED_FLOORS[family], report.to_dict()


def test_shipped_diffusion_model_edits_above_its_floors():
    """10 tasks of each kind of ``loom eval edits`` (on 100: recolour 0.900, repaint 0.980, keep 1.000;
    bench/results/edits_2026-12-07.txt); measured here 1.0, 0.9, 1.0."""
    from loom.evaluation import evaluate_edits

    data = evaluate_edits("diffusion", n=10, progress=False)
    scores = {kind: data[kind]["score"] for kind in ("recolour", "repaint", "keep")}
    assert scores["recolour"] >= 0.7 and scores["repaint"] >= 0.7 and scores["keep"] >= 0.95, scores


@pytest.mark.parametrize("family", ["vae", "gan", "diffusion-fast"])
def test_what_a_prompt_leaves_open_is_spread_like_the_world(family):
    """32 seeds of each of the world's diversity prompts: positions, sizes and backgrounds as even
    as the world's own (1.0), measured 0.95 for the vae and for diffusion-fast (0.67 as typed)."""
    from loom.evaluation import _shapes_pipeline, shapes_diversity

    div = shapes_diversity(_shapes_pipeline(family, None), progress=False)
    assert div["diversity"] >= 0.85, div


@pytest.mark.parametrize("family", sorted(FLOORS))
def test_shipped_weights_are_small_and_record_how_they_were_made(family, tmp_path):
    import loom
    from loom.plugins.shapes import ShapesEval

    folder = get_registry().get(family).cls.default_weights
    # "a few MB": the largest, diffusion with its wider autoencoder, is 14.3 MB of float16
    assert sum(f.stat().st_size for f in folder.glob("*.safetensors")) < 16e6
    config = json.loads((folder / "config.json").read_text())
    training = config["training"]
    assert training["command"].startswith(f"loom train {family}") and "seed" in training
    assert (folder / "TRAINING.md").read_text().count(training["command"]) >= 1
    # and the weights so described draw: the family's default (these weights; the chain the floor
    # tests above already loaded) makes, at the image size the config records, a picture whose
    # saved PNG decodes to it and in which ShapesEval reads the background asked for
    prompt = "a red circle on a blue background"
    result = loom.generate(prompt, seed=0, generator=family, size=None, progress=False)
    assert result.provenance["spec"]["steps"][-1]["component"] == family
    loom.save(result, tmp_path / "out.png")
    picture = np.asarray(PILImage.open(tmp_path / "out.png").convert("RGB"))
    assert picture.shape == (config["image_size"], config["image_size"], 3) and picture.std() > 10
    assert np.array_equal(picture, result.output.to_numpy()[0])
    assert ShapesEval().evaluate(picture, prompt).detected[0]["background"] == "blue"


#: Whole-caption floors of the shipped text-to-sound defaults on the 60 fresh captions used here
#: (SoundsEval; measured there: vae-sound 0.383, gan-sound 0.933); the scores on 200 are in
#: docs/audio.md (bench/families.py --world sounds).
SOUND_FLOORS = {"vae-sound": 0.3, "gan-sound": 0.8}


@pytest.mark.parametrize("family", sorted(SOUND_FLOORS))
def test_shipped_sound_default_scores_above_its_floor_on_fresh_captions(family):
    from loom.evaluation import evaluate_sounds

    report = evaluate_sounds(family, n=60, progress=False)
    assert report.n == 60
    assert report.whole_prompt >= SOUND_FLOORS[family], report.to_dict()


#: Whole-caption floors on 60 underspecified captions, through each sound family's prompt
#: completion (measured here: vae-sound 0.667, gan-sound 0.967).
SOUND_UNDERSPECIFIED_FLOORS = {"vae-sound": 0.5, "gan-sound": 0.85}


@pytest.mark.parametrize("family", sorted(SOUND_UNDERSPECIFIED_FLOORS))
def test_shipped_sound_default_draws_captions_that_leave_attributes_unsaid(family):
    from loom.evaluation import evaluate_sounds

    report = evaluate_sounds(family, n=60, split="underspecified", progress=False)
    assert report.whole_prompt >= SOUND_UNDERSPECIFIED_FLOORS[family], report.to_dict()


@pytest.mark.parametrize("family", sorted(SOUND_FLOORS))
def test_shipped_sound_weights_are_small_and_record_how_they_were_made(family, tmp_path):
    folder = get_registry().get(family).cls.default_weights
    assert folder.name == "sound_weights"
    assert (folder / "model.safetensors").stat().st_size < 10e6
    config = json.loads((folder / "config.json").read_text())
    assert config["family"] == family and config["mel"]["samples"] == 24000
    training = config["training"]
    assert training["command"].startswith(f"loom train {family} --data sounds") and "seed" in training
    assert (folder / "TRAINING.md").read_text().count(training["command"]) >= 1
    # and the folder so described is a whole generator: loaded from its path alone, it makes a clip
    # of the recorded length whose WAV decodes to that many samples at the Sounds rate, not silence,
    # in which SoundsEval hears beeps
    import soundfile

    import loom
    from loom.plugins.sounds import SAMPLE_RATE, SoundsEval

    result = loom.generate("three rising high beeps", seed=0, generator=str(folder), size=None, progress=False)
    loom.save(result, tmp_path / "beeps.wav")
    samples, rate = soundfile.read(tmp_path / "beeps.wav", dtype="float32")
    assert rate == SAMPLE_RATE and samples.shape == (config["mel"]["samples"],)
    assert float(np.sqrt(np.mean(samples**2))) > 1e-3
    assert SoundsEval().evaluate(samples, "three rising high beeps", rate).detected["count"] >= 1


def test_evaluation_passes_generator_options_to_its_step(tmp_path):
    from loom.core import LoomError

    # an empty weights folder instead of the shipped one: the error names it, so the option arrived
    with pytest.raises(LoomError, match=str(tmp_path)):
        evaluate_shapes(
            "gan", prompts=["a red circle on a blue background"], options={"weights": str(tmp_path)}, progress=False
        )
    report = evaluate_shapes(
        "gan", prompts=["a red circle on a blue background"] * 2, options={"temperature": 0.0}, progress=False
    )
    assert report.n == 2 and len(report.scores) == 2


def test_the_readmes_first_command_draws_what_it_says_at_different_places_and_sizes():
    """`loom generate "a red circle on a blue background" -o out.png --seed N` for N = 0..9."""
    import loom
    from loom.plugins.shapes import ShapesEval

    prompt = "a red circle on a blue background"
    checker = ShapesEval()
    scores = [checker.evaluate(loom.generate(prompt, seed=n, progress=False).images[0], prompt) for n in range(10)]
    right = sum(s.correct for s in scores)
    places = {s.detected[1].get("position") for s in scores}
    sizes = {s.detected[1].get("size") for s in scores}
    assert right == 10, [s.to_dict() for s in scores if not s.correct]
    assert len(places) >= 3 and len(sizes) == 2, (places, sizes)
