"""``loom train diffusion-fast`` (issue 36, part 1): the Shapes diffusion model distilled to a few
steps, on a tiny random-weight teacher and a few images, a few steps only."""

import json

import pytest
import torch
from fakes import captioned_renders, ctrl_c_at, random_embeddings, tiny_shapes_diffusion
from safetensors.torch import load_file

import loom
from loom.core import WeightsError
from loom.core.training import TrainingBatch
from loom.plugins.diffusion.ddim import trailing
from loom.plugins.diffusion.distill import DDIM, DistillOptions, DistillTrainer
from loom.plugins.diffusion.shapes import ShapesDiffusionModel


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return tiny_shapes_diffusion(tmp_path_factory.mktemp("distill-teacher") / "teacher")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return captioned_renders(tmp_path_factory.mktemp("distill-data"))


def schedule():
    from loom.plugins.diffusion.shapes import ShapesDiffusionConfig, noise_schedule

    return noise_schedule(ShapesDiffusionConfig())


def test_the_trailing_timesteps_and_ddim_steps_are_diffusers_own():
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(schedule().config, timestep_spacing="trailing", set_alpha_to_one=True)
    sched.set_timesteps(4)
    assert sched.timesteps.tolist() == trailing(4, 1000).tolist() == [999, 749, 499, 249]
    ddim = DDIM(schedule().alphas_cumprod)
    gen = torch.Generator().manual_seed(0)
    x, v = torch.randn(1, 8, 4, 4, generator=gen), torch.randn(1, 8, 4, 4, generator=gen)
    for t, t_next in ((999, 749), (249, -1)):
        ours = ddim.step(x, v, torch.tensor([t]), torch.tensor([t_next]))
        theirs = sched.step(v, t, x).prev_sample
        assert torch.allclose(ours, theirs, atol=1e-5), (t, (ours - theirs).abs().max())


def test_the_velocity_to_a_point_is_the_one_whose_step_lands_there():
    ddim = DDIM(schedule().alphas_cumprod)
    gen = torch.Generator().manual_seed(1)
    x, v = torch.randn(3, 8, 4, 4, generator=gen), torch.randn(3, 8, 4, 4, generator=gen)
    t, t_next = torch.tensor([999, 499, 249]), torch.tensor([749, 249, -1])
    landed = ddim.step(x, v, t, t_next)
    assert torch.allclose(ddim.velocity_to(x, t, landed, t_next), v, atol=1e-4)


def batch(n=2):
    emb = random_embeddings(n)
    images = torch.rand(n, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    return TrainingBatch(images, emb.tokens, emb.mask, emb.pooled, ["a"] * n)


def first_loss(teacher, **options):
    torch.manual_seed(0)
    opts = DistillOptions(teacher=teacher, batch_size=2, **options)
    return DistillTrainer(opts, torch.Generator().manual_seed(0)).step(batch(), 0.0)["loss"]


def test_a_student_that_takes_the_teachers_own_steps_starts_with_nothing_to_learn(teacher):
    # one student step per teacher step, no guidance: the target is the teacher's own velocity
    same = first_loss(teacher, student_steps=[4], teacher_steps=4, guidance_scale=1.0)
    assert same < 1e-8
    # guidance, or two teacher steps per student step, give it something to learn
    assert first_loss(teacher, student_steps=[4], teacher_steps=4, guidance_scale=3.0) > 1e-4
    assert first_loss(teacher, student_steps=[2], teacher_steps=4, guidance_scale=1.0) > 1e-4


def test_steps_that_do_not_nest_are_refused():
    with pytest.raises(
        ValueError, match=r"teacher_steps \(4\) must be a multiple of each of student_steps \(not of \[3\]\)"
    ):
        DistillOptions(student_steps=[1, 3])


def train(out, teacher, images, steps=3, on_step=None):
    return loom.train(
        "diffusion-fast",
        images,
        steps=steps,
        out=out,
        seed=1,
        on_step=on_step,
        options={"teacher": teacher, "batch_size": 2, "student_steps": [1, 2], "teacher_steps": 4, "sample_steps": 1},
        progress=False,
    )


@pytest.mark.slow
def test_a_distilled_model_resumes_bit_for_bit_and_samples_in_its_own_steps(tmp_path, teacher, images):
    folder = train(tmp_path / "fast", teacher, images, on_step=ctrl_c_at(2))
    loom.train("diffusion-fast", resume=folder, progress=False)
    straight = train(tmp_path / "straight", teacher, images)
    resumed, whole = load_file(str(folder / "model.safetensors")), load_file(str(straight / "model.safetensors"))
    assert not [k for k in whole if not torch.equal(resumed[k], whole[k])]
    config = json.loads((folder / "config.json").read_text())
    assert config["family"] == "diffusion-fast"
    assert config["training"]["teacher_from"]["folder"] == teacher
    assert (folder / "samples.png").is_file()
    # the trained student differs from the teacher it started as
    assert not torch.equal(whole["conv_in.weight"], load_file(f"{teacher}/model.safetensors")["conv_in.weight"])

    # the generator samples it in 1, 2 and 4 steps, the same images for the same seeds, whatever the batch
    for steps in (1, 2, 4):
        pipeline = loom.Pipeline.from_steps(
            ("text-encoder", {}), ("diffusion-fast", {"weights": str(folder), "steps": steps})
        )
        two = pipeline.run(["a red circle", "a blue square"], seed=[3, 4], progress=False)
        one = pipeline.run(["a blue square"], seed=[4], progress=False)
        assert torch.equal(two.output.pixels[1], one.output.pixels[0])


def test_the_student_samples_as_it_was_trained_to_step(teacher):
    """The ``ddim-trailing`` scheduler the generator samples with takes the trainer's DDIM steps."""
    model = ShapesDiffusionModel.from_folder(teacher)
    emb = random_embeddings(2)
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    images = model.generate(
        emb.tokens, emb.mask, emb.pooled, gens, steps=4, scheduler="ddim-trailing", guidance_scale=1
    )
    from diffusers.utils.torch_utils import randn_tensor

    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    x = randn_tensor((2, model.cfg.channels, model.cfg.latent_size, model.cfg.latent_size), generator=gens)
    ddim, ts = DDIM(schedule().alphas_cumprod), [*trailing(4, 1000).tolist(), -1]
    with torch.no_grad():
        for t, t_next in zip(ts, ts[1:]):
            t, t_next = torch.tensor([t, t]), torch.tensor([t_next, t_next])
            x = ddim.step(x, model(x, t, emb.tokens, emb.mask, emb.pooled), t, t_next)
        ours = model.unfold(x).clamp(0, 1)
    assert torch.allclose(images, ours, atol=1e-4)


def test_each_generator_refuses_the_others_folder_in_one_line(teacher):
    with pytest.raises(WeightsError, match="holds a 'diffusion' model, not a 'diffusion-fast' one"):
        loom.Pipeline.from_steps(("diffusion-fast", {"weights": teacher}))


def test_the_plain_trailing_ddim_is_diffusers_bit_for_bit(teacher):
    """Sampling ``ddim-trailing`` imports no diffusers, and gives what diffusers' DDIMScheduler gives."""
    from loom.plugins.diffusion import shapes
    from loom.plugins.diffusion.sampling import make_scheduler

    model = ShapesDiffusionModel.from_folder(teacher)
    emb = random_embeddings(2)

    def images():
        gens = [torch.Generator().manual_seed(i) for i in range(2)]
        return model.generate(emb.tokens, emb.mask, emb.pooled, gens, steps=4, scheduler="ddim-trailing")

    ours = images()
    theirs = make_scheduler(schedule(), "ddim-trailing")
    original = shapes.ddim.TrailingDDIM
    try:
        shapes.ddim.TrailingDDIM = lambda *a: theirs  # the same sampling loop on diffusers' scheduler
        assert torch.equal(ours, images())
    finally:
        shapes.ddim.TrailingDDIM = original
    plain = shapes.ddim.TrailingDDIM(1000, "v_prediction")
    assert torch.equal(plain.alphas_cumprod, schedule().alphas_cumprod)
    x, noise = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    t = torch.tensor([999, 500, 3])
    assert torch.equal(plain.add_noise(x, noise, t), theirs.add_noise(x, noise, t))
