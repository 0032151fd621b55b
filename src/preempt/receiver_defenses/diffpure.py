"""DiffPure (Nie et al., ICML 2022): diffuse the image part-way to noise, then solve the reverse SDE back.

As the authors' code does it: x → 2x − 1; diffuse to t* with DDPM's discrete schedule (x_t = √ᾱ·x + √(1−ᾱ)·ε,
ᾱ after round(1000·t*) of its 1000 steps); solve the reverse VP SDE (β from 0.1 to 20) from t* to 1e-5 with
Euler–Maruyama steps of dt = 1e-3, one sample per input, the score being −ε̂(x, t)/√(1−ᾱ(t)); map back to [0,1].
Images whose size differs from the score model's are resized to it (bilinear) and back, as the authors do for
ImageNet (224 → 256). Unlike the authors' code the output is clipped to [0,1], the range every transform keeps.

The solver is a batched loop of our own (`solver=loop`, the default) or torchsde's `sdeint` (`solver=torchsde`);
both take the same Euler–Maruyama step (a test checks they agree on one Brownian path) and run equally fast within
this CPU's noise (see the README). The loop is the default because its gradient is the exact gradient of what
was computed, with each step checkpointed so memory stays flat; the adjoint's matches it only as dt → 0.
Gradients for the man in the middle: `backprop` (exact, through the unrolled solver),
`adjoint` (torchsde's adjoint SDE, exact as dt → 0, memory independent of the step count: for large models), or
`none` (the transform is then non-differentiable and attacks need BPDA). The score model is bound at test start
from the `score_model` config group (`preempt.assembly`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Annotated, ClassVar, Literal

import torch
import torch.nn.functional as F
from annotated_types import Gt, Le
from pydantic import validate_call
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from preempt.parts import InputTransform
from preempt.parts.constraints import ARBITRARY_TYPES
from preempt.score_models.vp import DISCRETE_STEPS, beta, continuous_alpha_bar, discrete_alpha_bar

DiffusionTime = Annotated[float, Gt(0), Le(1)]
StepSize = Annotated[float, Gt(0), Le(0.1)]
# The reverse SDE stops just short of t = 0, where the score's 1/√(1−ᾱ) diverges (the authors' 1e-5).
END_TIME = 1e-5
# Draws one Brownian increment for the step from time `start` down to `end` (a positive length start − end).
Increments = Callable[[float, float, Tensor], Tensor]


def gaussian_increments(start: float, end: float, like: Tensor) -> Tensor:
    """√(start − end)·z with z ~ N(0, I) from torch's RNG, so a seed repeats the path."""
    return math.sqrt(start - end) * torch.randn_like(like)


def reverse_times(t_star: float, step_size: float, end: float = END_TIME) -> list[float]:
    """t*, t* − dt, ..., down to `end`: the last step is shortened to land on `end`, as torchsde's is."""
    count = math.ceil((t_star - end) / step_size - 1e-9)
    return [t_star - k * step_size for k in range(count)] + [end]


def reverse_drift(noise_predictor: Callable[[Tensor, Tensor], Tensor], x: Tensor, t: float) -> Tensor:
    """dx/d(−t) without the noise: ½β(t)·x + β(t)·score, score = −ε̂(x, t)/√(1−ᾱ(t))."""
    times = torch.full((len(x),), t, device=x.device, dtype=x.dtype)
    sigma = (1 - continuous_alpha_bar(times)).sqrt()[:, None, None, None]
    rate = beta(times)[:, None, None, None]
    return 0.5 * rate * x - rate * noise_predictor(x, times) / sigma


def solve_reverse_sde(
    noise_predictor: Callable[[Tensor, Tensor], Tensor],
    x_t: Tensor,
    times: list[float],
    increments: Increments = gaussian_increments,
) -> Tensor:
    """Euler–Maruyama on the reverse VP SDE through `times` (decreasing): one batched score call per step.

    Under autograd each step's score call is checkpointed: only the step's input is kept and the network is run
    again in the backward pass, so backprop through 1000·t* steps keeps one network's activations, not all of them.
    One input gradient through 100 steps on 128 digits: 6.8 GB peak without, 1.0 GB with (and 11.3 s against 8.5 s
    on this 2-core CPU: less memory traffic outweighs the second forward pass).
    """
    keep_graph = torch.is_grad_enabled() and x_t.requires_grad
    x = x_t
    for start, end in itertools.pairwise(times):
        g = math.sqrt(beta(start))
        if keep_graph:
            drift = checkpoint(reverse_drift, noise_predictor, x, start, use_reentrant=False)
        else:
            drift = reverse_drift(noise_predictor, x, start)
        x = x + (start - end) * drift + g * increments(start, end, x)
    return x


class ReverseVPSDE(nn.Module):
    """The reverse SDE in torchsde's form: forward time s = 1 − t on flattened images (torchsde's state is 2-D)."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, noise_predictor: nn.Module, image_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.noise_predictor = noise_predictor
        self.image_shape = image_shape

    def f(self, s: Tensor, y: Tensor) -> Tensor:
        x = y.view(len(y), *self.image_shape)
        return reverse_drift(self.noise_predictor, x, float(1 - s)).flatten(start_dim=1)

    def g(self, s: Tensor, y: Tensor) -> Tensor:
        return beta(1 - s).sqrt().expand_as(y)


def solve_with_torchsde(
    noise_predictor: nn.Module, x_t: Tensor, t_star: float, step_size: float, adjoint: bool, brownian: object = None
) -> Tensor:
    """torchsde's Euler–Maruyama (`sdeint`, or `sdeint_adjoint` for memory-light exact gradients) from s = 1 − t*
    to 1 − 1e-5; the Brownian path is seeded from torch's RNG unless one is given."""
    import torchsde

    sde = ReverseVPSDE(noise_predictor, tuple(x_t.shape[1:]))
    y0 = x_t.flatten(start_dim=1)
    times = torch.tensor([1 - t_star, 1 - END_TIME], dtype=y0.dtype, device=y0.device)
    if brownian is None:  # its ends as the solver sees them (in y0's dtype), or it warns that they differ
        entropy = int(torch.randint(2**31 - 1, ()).item())
        start, end = (float(time) for time in times)
        brownian = torchsde.BrownianInterval(
            t0=start, t1=end, size=y0.shape, dtype=y0.dtype, device=y0.device, entropy=entropy
        )
    integrate = torchsde.sdeint_adjoint if adjoint else torchsde.sdeint  # the adjoint skips frozen weights
    path = integrate(sde, y0, times, method="euler", dt=step_size, bm=brownian)
    return path[-1].view_as(x_t)


class DiffPure(InputTransform):
    """g(x) = DiffPure's purification at diffusion time `t_star` with the bound score model (see the module doc).

    t_star: how far towards noise the image is diffused (the authors: 0.1 for CIFAR-10 Linf 8/255, 0.075 for L2
    0.5, 0.15 for ImageNet Linf 4/255); a multiple of 1/1000, as the discrete schedule has 1000 steps.
    step_size: the solver's dt (the authors' 1e-3: 1000·t* score evaluations per image).
    """

    bound: ClassVar[tuple[str, ...]] = ("score_model",)
    random = True

    @validate_call(config=ARBITRARY_TYPES)
    def __init__(
        self,
        t_star: DiffusionTime = 0.1,
        step_size: StepSize = 1e-3,
        solver: Literal["loop", "torchsde"] = "loop",
        gradients: Literal["backprop", "adjoint", "none"] = "backprop",
        score_model: nn.Module | None = None,
    ) -> None:
        steps = t_star * DISCRETE_STEPS
        if abs(steps - round(steps)) > 1e-6:
            raise ValueError(
                f"t_star={t_star} is not a multiple of 1/{DISCRETE_STEPS}: DiffPure diffuses with the discrete "
                f"{DISCRETE_STEPS}-step schedule; use e.g. t_star={round(steps) / DISCRETE_STEPS}"
            )
        if gradients == "adjoint" and solver != "torchsde":
            raise ValueError("gradients=adjoint is torchsde's adjoint SDE: set solver=torchsde too")
        self.t_star, self.step_size, self.solver, self.gradients = t_star, step_size, solver, gradients
        self.diffusion_steps = round(steps)
        self.differentiable = gradients != "none"
        self.score_model = score_model

    def check_fits(self, image_shape: tuple[int, ...]) -> None:
        """Refuse images the score model cannot purify: another channel count (sizes are resized)."""
        channels = self._model().image_shape[0]
        if image_shape[0] != channels:
            raise ValueError(
                f"score model {self._model().name} denoises {channels}-channel images and these have "
                f"{image_shape[0]}: pick a score_model made for this dataset (score_model=digits for digits, "
                f"ddpmpp_cifar10 for CIFAR-10, guided_imagenet256 for ImageNet)"
            )

    def _model(self) -> nn.Module:
        if self.score_model is None:
            raise RuntimeError("DiffPure has no score model: pass score_model= (a run binds the score_model config)")
        return self.score_model

    def transform(self, x: Tensor) -> Tensor:
        self.check_fits(tuple(x.shape[1:]))
        model = self._model()
        size = model.image_shape[1:]
        resized = tuple(x.shape[-2:]) != tuple(size)
        # The solver runs in the score model's input precision; the output comes back in the input's dtype.
        seen = x.to(next(model.parameters(), x).dtype)
        seen = F.interpolate(seen, size=size, mode="bilinear", align_corners=False) if resized else seen
        alpha_bar = discrete_alpha_bar(self.diffusion_steps)
        x_t = math.sqrt(alpha_bar) * (2 * seen - 1) + math.sqrt(1 - alpha_bar) * torch.randn_like(seen)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.differentiable):
            if self.solver == "loop":
                x_0 = solve_reverse_sde(model, x_t, reverse_times(self.t_star, self.step_size))
            else:
                x_0 = solve_with_torchsde(model, x_t, self.t_star, self.step_size, self.gradients == "adjoint")
        purified = (x_0 + 1) / 2
        if resized:
            purified = F.interpolate(purified, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return purified.clamp(0.0, 1.0).to(x.dtype)
