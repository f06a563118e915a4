"""Distilling the Shapes diffusion model to a few steps: ``loom train diffusion-fast`` (the
``diffusion-fast`` generator's family).

The method is progressive distillation (Salimans & Ho, 2022) with the teacher's guidance folded in
(Meng et al., 2023), done in one round: the student (a copy of the teacher's UNet; the autoencoder
is the teacher's, frozen) learns to go in one deterministic DDIM step where the guided teacher goes
in ``teacher_steps / S``, for each step count S of ``student_steps`` (one drawn per training step).
Each step, a batch of the world's images is encoded and noised to one of the student's S timesteps
("trailing" spacing: the first at the end of the schedule, where sampling starts); the teacher runs its DDIM steps from there to the student's next
timestep (its last step: to the final latents), and the student's velocity is trained towards the
one whose DDIM step lands where the teacher did. Sampling is DDIM with trailing timesteps and no
guidance (the ``ddim-trailing`` scheduler, :mod:`.ddim`, bit-equal to diffusers'): one UNet call per step, where the
teacher makes two per step (guidance) and twenty steps.

The output folder is a Shapes diffusion folder (``"family": "diffusion-fast"``) whose record names
the teacher and how it was made.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from pydantic import Field, model_validator
from torch.nn import functional as F

from loom.core import InputError
from loom.core.training import Trainer, TrainerOptions
from loom.plugins.common.training import warmup_cosine

from .ddim import trailing
from .lora_training import base_folder
from .sampling import SHAPES_GUIDANCE
from .shapes import ShapesDiffusionModel, _guided, noise_schedule
from .training import update, update_ema

#: The family (and generator) a distilled model belongs to.
FAMILY = "diffusion-fast"
#: The scheduler that samples a distilled model: the DDIM steps it was trained to take.
STUDENT_SCHEDULER = "ddim-trailing"


class DistillOptions(TrainerOptions):
    batch_size: int = Field(32, ge=1, description="images per step")
    lr: float = Field(1e-4, gt=0, description="peak learning rate (the student starts from the teacher)")
    teacher: str | None = Field(None, description="the diffusion folder to distil; None: the shipped model")
    student_steps: list[int] = Field(
        default_factory=lambda: [1, 2, 4],
        min_length=1,
        description="the step counts the student learns to sample in (one drawn per training step)",
    )
    teacher_steps: int = Field(4, ge=1, le=200, description="the teacher's DDIM steps the student's replace")
    guidance_scale: float = Field(
        SHAPES_GUIDANCE, ge=1.0, le=20.0, description="the teacher's classifier-free guidance, folded into the student"
    )
    ema_decay: float = Field(0.995, ge=0.0, lt=1.0, description="decay of the exported weight average")
    sample_steps: int = Field(2, ge=1, description="the student's denoising steps for the sample grid")

    @model_validator(mode="after")
    def _steps_nest(self):
        bad = [s for s in self.student_steps if s < 1 or self.teacher_steps % s]
        if bad:
            raise ValueError(
                f"teacher_steps ({self.teacher_steps}) must be a multiple of each of student_steps (not of {bad}): "
                "each student step replaces a whole number of the teacher's"
            )
        return self


class DDIM:
    """Deterministic DDIM steps between any timesteps of a v-prediction schedule, one timestep per
    batch item (-1: the clean latents)."""

    def __init__(self, alphas_cumprod: torch.Tensor) -> None:
        # index 0 is timestep -1, where the latents are clean
        self.acp = torch.cat([torch.ones(1), alphas_cumprod.float()])

    def coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha, sigma) of timesteps ``t``, shaped to scale B×C×H×W latents."""
        acp = self.acp[t + 1][:, None, None, None]
        return acp.sqrt(), (1 - acp).sqrt()

    def step(self, x, v, t, t_next):
        """The latents at ``t_next`` that the velocity ``v`` at ``t`` points to."""
        a, s = self.coefficients(t)
        a_next, s_next = self.coefficients(t_next)
        x0, eps = a * x - s * v, s * x + a * v
        return a_next * x0 + s_next * eps

    def velocity_to(self, x, t, x_next, t_next):
        """The velocity at ``t`` whose step from ``x`` lands on ``x_next`` at ``t_next``."""
        a, s = self.coefficients(t)
        a_next, s_next = self.coefficients(t_next)
        # the clean latents x0 with a_next·x0 + s_next·eps = x_next, eps being x's own noise for that x0
        ratio = s_next / s
        x0 = (x_next - ratio * x) / (a_next - ratio * a)
        return (a * x - x0) / s


class DistillTrainer(Trainer):
    family = FAMILY
    Options = DistillOptions

    def __init__(self, options: DistillOptions, generator: torch.Generator) -> None:
        super().__init__(options, generator)
        self.teacher_folder = base_folder(options.teacher)
        teacher = ShapesDiffusionModel.from_folder(self.teacher_folder).requires_grad_(False)
        if teacher.cfg.prediction_type != "v_prediction":
            raise InputError(f"--teacher {str(self.teacher_folder)!r}: distillation needs a v-prediction model")
        self.teacher = teacher.eval()
        self.model = copy.deepcopy(teacher)
        self.model.cfg = teacher.cfg.model_copy(update={"family": FAMILY, "training": {}})
        self.model.unet.requires_grad_(True).train()
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.ema_steps = 0
        self.opt = torch.optim.AdamW(self.model.unet.parameters(), lr=options.lr, weight_decay=0.0)
        train_steps = teacher.cfg.num_train_timesteps
        self.ddim = DDIM(noise_schedule(teacher.cfg).alphas_cumprod)
        self.train_steps = train_steps
        self.teacher_t = torch.cat([trailing(options.teacher_steps, train_steps), torch.tensor([-1])])
        self.record = teacher.cfg.training or {}

    def step(self, batch, progress: float) -> dict[str, float]:
        o = self.options
        with torch.no_grad():
            x0 = self.model.fold(batch.images)
            b = x0.shape[0]
            steps = o.student_steps[int(torch.randint(0, len(o.student_steps), (1,), generator=self.generator))]
            which = torch.randint(0, steps, (b,), generator=self.generator)
            noise = torch.randn(x0.shape, generator=self.generator)
            t = trailing(steps, self.train_steps)[which]
            a, s = self.ddim.coefficients(t)
            x = a * x0 + s * noise
            target = self._teacher_target(x, which, o.teacher_steps // steps, batch)
        v = self.model(x, t, batch.tokens, batch.mask, batch.pooled)
        loss = F.mse_loss(v, target)
        lr = warmup_cosine(o.lr, progress, floor=0.1)
        update(self.opt, self.model.unet.parameters(), loss, lr)
        self._update_ema()
        return {"loss": loss.item(), "lr": lr}

    def _teacher_target(self, x, which, per: int, batch):
        """The velocity at each item's student timestep (the ``which``-th, each the teacher's ``per``
        steps long) that lands where the guided teacher's DDIM steps from ``x`` to the next student
        timestep (or the clean latents) land."""
        condition = _guided(batch.tokens, batch.mask, batch.pooled)
        start = x
        for k in range(per):
            t, t_next = self.teacher_t[which * per + k], self.teacher_t[which * per + k + 1]
            x = self.ddim.step(x, self._guided_velocity(x, t, condition), t, t_next)
        return self.ddim.velocity_to(start, self.teacher_t[which * per], x, self.teacher_t[(which + 1) * per])

    def _guided_velocity(self, x, t, condition):
        uncond, cond = self.teacher(torch.cat([x, x]), torch.cat([t, t]), *condition).chunk(2)
        return uncond + self.options.guidance_scale * (cond - uncond)

    def _update_ema(self) -> None:
        self.ema_steps += 1
        update_ema(self.ema.unet, self.model.unet, self.ema_steps, self.options.ema_decay)

    def state(self) -> dict:
        return {
            "unet": self.model.unet.state_dict(),
            "ema": self.ema.unet.state_dict(),
            "opt": self.opt.state_dict(),
            "ema_steps": self.ema_steps,
        }

    def load_state(self, state: dict) -> None:
        self.model.unet.load_state_dict(state["unet"])
        self.ema.unet.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.ema_steps = int(state["ema_steps"])

    def load_generator(self, folder: Path) -> None:
        trained = ShapesDiffusionModel.from_folder(folder)
        for model in (self.model, self.ema):
            model.unet.load_state_dict(trained.unet.state_dict())

    def origins(self) -> dict[str, dict]:
        # the shipped teacher by its name, so that the record says the same on every machine
        name = "diffusion" if self.options.teacher in (None, "diffusion") else str(self.teacher_folder)
        keep = ("command", "resumed", "init_from", "seed", "steps", "minutes")
        return {"teacher_from": {"folder": name, **{k: self.record.get(k) for k in keep}}}

    def export(self, folder: Path, training: dict) -> None:
        self.ema.save(folder, training)

    def sample(self, tokens, mask, pooled, generators):
        return self.ema.generate(
            tokens,
            mask,
            pooled,
            generators,
            steps=self.options.sample_steps,
            scheduler=STUDENT_SCHEDULER,
            guidance_scale=1.0,
        )
