"""What DiffPure needs from a diffusion model: ε̂(x_t, t), the noise in a VP-diffused image at continuous time t.

Every network (the project's digits model, score_sde's DDPM++, guided-diffusion's ImageNet UNet) is wrapped to this
one call shape, so the solver never knows which it runs: each wrapper turns t into the timestep conditioning its
network was trained with, and drops outputs DiffPure does not use.
"""

from __future__ import annotations

from abc import abstractmethod

from torch import Tensor, nn


class NoisePredictor(nn.Module):
    """ε̂(x, t): x a batch (B, C, H, W) of diffused images in the centered [-1,1] space, t a (B,) tensor of
    continuous VP times in [0,1]; returns the predicted unit Gaussian noise, shaped like x.

    `image_shape` (C, H, W) is the resolution the network was trained at; DiffPure resizes other sizes to it.
    """

    image_shape: tuple[int, int, int]
    name: str

    @abstractmethod
    def forward(self, x: Tensor, t: Tensor) -> Tensor: ...
