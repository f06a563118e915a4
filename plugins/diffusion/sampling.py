"""How Loom's diffusion components sample, shared by the diffusers components, the Shapes model and
its runtime: the scheduler names and the diffusers scheduler each builds, and the Shapes model's
guidance. Imports no torch or diffusers until a scheduler is built.
"""

from __future__ import annotations

from typing import Literal

#: Classifier-free guidance of the Shapes diffusion model (the ``diffusion`` component and
#: training's sample grid). Paired on 300 validation prompts (``bench/sampling_sweep.py``), the
#: shipped model (``runs/ldm10``) scored 0.777, 0.817 and 0.820 at 1.5, 2 and 2.5 (2.5 against 2:
#: 7 prompts right only at 2.5, 6 only at 2, a tie), and the one before it (``runs/ldm9``) 0.777,
#: 0.767 and 0.750 at 2, 2.5 and 3. (On the first 100 evaluation prompts 3 had looked best for
#: ldm9, 0.85 against 0.80: within the noise of 100 prompts.)
SHAPES_GUIDANCE = 2.0

#: Strength of an edit when a request gives none, diffusers' defaults for every diffusion step:
#: image-to-image keeps something of the image, inpainting repaints the masked part entirely.
EDIT_STRENGTH = 0.8
REPAINT_STRENGTH = 1.0


def strength_option():
    """The ``strength`` config option of every diffusion step that edits images."""
    from pydantic import Field

    return Field(
        None,
        ge=0.0,
        le=1.0,
        description=f"with an image: how much to repaint (0 keeps it, 1 all); default {EDIT_STRENGTH}, "
        f"or {REPAINT_STRENGTH} with a mask",
    )


def edit_strength(strength: float | None, inpaint: bool) -> float:
    """The strength an edit runs at: the request's, else :data:`REPAINT_STRENGTH` with a mask or
    :data:`EDIT_STRENGTH` without."""
    if strength is not None:
        return strength
    return REPAINT_STRENGTH if inpaint else EDIT_STRENGTH


#: Scheduler names and the diffusers class (and options) each maps to; ``default`` keeps the
#: folder's own scheduler. Every scheduler is built with ``from_config`` from the folder's.
SCHEDULERS: dict[str, tuple[str | None, dict]] = {
    "default": (None, {}),
    "ddim": ("DDIMScheduler", {}),
    # the first step at the very end of the schedule and the last to the clean image: the steps a
    # distilled model (``diffusion-fast``) was trained to take
    "ddim-trailing": ("DDIMScheduler", {"timestep_spacing": "trailing", "set_alpha_to_one": True}),
    "ddpm": ("DDPMScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpm++2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpm++2m-karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "unipc": ("UniPCMultistepScheduler", {}),
}
SchedulerName = Literal[
    "default",
    "ddim",
    "ddim-trailing",
    "ddpm",
    "pndm",
    "euler",
    "euler-ancestral",
    "heun",
    "dpm++2m",
    "dpm++2m-karras",
    "unipc",
]


def make_scheduler(current, name: str):
    """The scheduler ``name`` (see :data:`SCHEDULERS`), built from ``current``'s config."""
    cls_name, options = SCHEDULERS[name]
    if cls_name is None:
        return current
    import diffusers

    return getattr(diffusers, cls_name).from_config(current.config, **options)
