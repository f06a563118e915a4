"""The ``ddim-trailing`` sampler of the Shapes diffusion models in plain torch: the steps a distilled
model (``diffusion-fast``) was trained to take, without importing diffusers, which imports
transformers, scipy and sympy (seconds of a cold start). The same numbers as diffusers'
``DDIMScheduler(timestep_spacing="trailing", set_alpha_to_one=True)`` at eta 0 on the models'
cosine schedule ("squaredcos_cap_v2"), bit for bit (tests/test_distill.py); its operations are
written in diffusers' order for that reason.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import torch

#: The noise schedule this sampler knows (diffusers' name).
SCHEDULE = "squaredcos_cap_v2"


def cosine_alphas_cumprod(train_steps: int, max_beta: float = 0.999) -> torch.Tensor:
    """diffusers' ``betas_for_alpha_bar`` (cosine), as its schedulers turn it into cumulative alphas."""

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    n = train_steps
    betas = torch.tensor([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), max_beta) for i in range(n)])
    return torch.cumprod(1.0 - betas.float(), dim=0)


def trailing(steps: int, train_steps: int) -> torch.Tensor:
    """``steps`` timesteps, the first at the very end of the schedule: diffusers' "trailing" spacing
    (the same float64 arithmetic, so the same integers for any ``steps``)."""
    return torch.from_numpy(np.round(np.arange(train_steps, 0, -train_steps / steps)).astype(np.int64) - 1)


class TrailingDDIM:
    """The scheduler interface :meth:`ShapesDiffusionModel.generate` uses (``timesteps``, ``order``,
    ``init_noise_sigma``, ``scale_model_input``, ``step``, ``add_noise``), deterministic DDIM."""

    order = 1
    init_noise_sigma = 1.0

    def __init__(self, train_steps: int, prediction_type: str) -> None:
        if prediction_type not in ("v_prediction", "epsilon"):
            raise ValueError(f"ddim-trailing samples v_prediction or epsilon models, not {prediction_type!r}")
        self.train_steps = train_steps
        self.prediction_type = prediction_type
        self.alphas_cumprod = cosine_alphas_cumprod(train_steps)
        self.final_alpha_cumprod = torch.tensor(1.0)
        self.num_inference_steps = 0
        self.timesteps = torch.tensor([], dtype=torch.int64)

    def set_timesteps(self, steps: int, device=None) -> None:
        """``steps`` timesteps, the first at the very end of the schedule."""
        self.num_inference_steps = steps
        self.timesteps = trailing(steps, self.train_steps).to(device)

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        return sample

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, generator=None) -> SimpleNamespace:
        """The next latents (``prev_sample``) and the guess of the clean ones (``pred_original_sample``)."""
        prev_timestep = timestep - self.train_steps // self.num_inference_steps
        alpha_prod_t = self.alphas_cumprod[timestep]
        alpha_prod_t_prev = self.alphas_cumprod[prev_timestep] if prev_timestep >= 0 else self.final_alpha_cumprod
        beta_prod_t = 1 - alpha_prod_t
        if self.prediction_type == "epsilon":
            pred_original_sample = (sample - beta_prod_t ** (0.5) * model_output) / alpha_prod_t ** (0.5)
            pred_epsilon = model_output
        else:
            pred_original_sample = (alpha_prod_t**0.5) * sample - (beta_prod_t**0.5) * model_output
            pred_epsilon = (alpha_prod_t**0.5) * model_output + (beta_prod_t**0.5) * sample
        beta_prod_t_prev = 1 - alpha_prod_t_prev
        variance = (beta_prod_t_prev / beta_prod_t) * (1 - alpha_prod_t / alpha_prod_t_prev)
        std_dev_t = 0.0 * variance ** (0.5)  # eta 0: deterministic
        pred_sample_direction = (1 - alpha_prod_t_prev - std_dev_t**2) ** (0.5) * pred_epsilon
        prev_sample = alpha_prod_t_prev ** (0.5) * pred_original_sample + pred_sample_direction
        return SimpleNamespace(prev_sample=prev_sample, pred_original_sample=pred_original_sample)

    def add_noise(self, original: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """``original`` noised to ``timesteps`` (one per item) with ``noise``."""
        alphas_cumprod = self.alphas_cumprod.to(device=original.device, dtype=original.dtype)
        timesteps = timesteps.to(original.device)
        shape = (-1,) + (1,) * (original.dim() - 1)
        sqrt_alpha_prod = (alphas_cumprod[timesteps] ** 0.5).flatten().reshape(shape)
        sqrt_one_minus_alpha_prod = ((1 - alphas_cumprod[timesteps]) ** 0.5).flatten().reshape(shape)
        return sqrt_alpha_prod * original + sqrt_one_minus_alpha_prod * noise


def item_noise(shape: tuple, generators: list, device) -> torch.Tensor:
    """Standard normal latents, item i's from ``generators[i]`` alone (diffusers' ``randn_tensor`` with
    a list of generators, each drawing on its own device)."""
    items = [torch.randn((1, *shape[1:]), generator=g, device=g.device) for g in generators]
    return torch.cat(items, dim=0).to(device)
