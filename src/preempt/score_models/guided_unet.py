"""guided-diffusion's 256×256 unconditional ImageNet UNet (Dhariwal & Nichol, 2021), the score model DiffPure
purifies ImageNet with, written for this project so the published `256x256_diffusion_uncond.pt` loads by name.

The checkpoint is a plain state dict, so every module here carries guided-diffusion's attribute names and is
registered in its order (`time_embed.0.weight`, `input_blocks.1.0.in_layers.2.weight`, ..., `out.2.bias`);
tests/score_models/data holds the reference manifest and a parity fixture made with guided-diffusion's own code.

Only the paths this model takes exist: 2-D images, no class conditioning, no gradient checkpointing, attention with
guided-diffusion's legacy channel layout (heads split before q, k, v: `use_new_attention_order=False`), and
learned-convolution resampling when `resblock_updown` is off. Parameters are left at PyTorch's default
initialisation (guided-diffusion zeroes some layers for training): the network is only ever used with loaded
weights.

DiffPure runs the trunk (input, middle and output blocks) in float16 on the GPU, as guided-diffusion's
`convert_to_fp16`: `GuidedUNet.set_trunk_dtype` casts the trunk's convolutions, while the time embedding, the
timestep projections inside the residual blocks, every GroupNorm (computed in float32) and the output head stay
float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from preempt.checkpoints import CheckpointError, load_checkpoint
from preempt.score_models.base import NoisePredictor

CHECKPOINT_URL = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/256x256_diffusion_uncond.pt"
# DiffPure's discretisation: continuous VP time t in [0,1] becomes the integer DDPM step long(1000·t).
NUM_TIMESTEPS = 1000
NORM_GROUPS = 32


class Float32GroupNorm(nn.GroupNorm):
    """GroupNorm whose statistics are always computed in float32, so a float16 trunk does not lose precision in
    the variance; the result comes back in the input's dtype."""

    def forward(self, x: Tensor) -> Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).to(x.dtype)


def timestep_embedding(timesteps: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal features of the (integer or fractional) DDPM step, cosines first then sines, as the checkpoint
    was trained with; frequencies fall geometrically from 1 to 1/max_period."""
    half = dim // 2
    exponents = torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    angles = timesteps.float()[:, None] * torch.exp(-math.log(max_period) * exponents)[None]
    features = torch.cat([angles.cos(), angles.sin()], dim=1)
    if dim % 2:
        features = F.pad(features, (0, 1))
    return features


class ResBlock(nn.Module):
    """Two GroupNorm → SiLU → 3×3 conv stages with a residual connection, conditioned on the time embedding
    (as a FiLM scale and shift after the second norm with `use_scale_shift_norm`, else as a shift before it).

    With `resample` "down" or "up" the block also halves (average pooling) or doubles (nearest) the resolution
    of both paths, between the first activation and its convolution: guided-diffusion's `resblock_updown`.
    """

    def __init__(
        self,
        channels: int,
        embedding_dim: int,
        out_channels: int | None = None,
        use_scale_shift_norm: bool = True,
        resample: str | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if resample not in (None, "down", "up"):
            raise ValueError(f"resample must be None, 'down' or 'up', not {resample!r}")
        out_channels = out_channels or channels
        self.resample = resample
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(
            Float32GroupNorm(NORM_GROUPS, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        projected = 2 * out_channels if use_scale_shift_norm else out_channels
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(embedding_dim, projected))
        self.out_layers = nn.Sequential(
            Float32GroupNorm(NORM_GROUPS, out_channels),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        # A 1×1 convolution only where the channel count changes (the decoder's concatenated skips).
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def _resample(self, x: Tensor) -> Tensor:
        if self.resample == "down":
            return F.avg_pool2d(x, kernel_size=2, stride=2)
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        return x

    def forward(self, x: Tensor, embedding: Tensor) -> Tensor:
        norm, activation, conv = self.in_layers
        h = conv(self._resample(activation(norm(x))))
        x = self._resample(x)
        condition = self.emb_layers(embedding).to(h.dtype)[:, :, None, None]
        out_norm, *rest = self.out_layers
        if self.use_scale_shift_norm:
            scale, shift = condition.chunk(2, dim=1)
            h = out_norm(h) * (1 + scale) + shift
        else:
            h = out_norm(h + condition)
        for layer in rest:
            h = layer(h)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all spatial positions, added back to the input.

    The 1×1 `qkv` convolution's output channels are laid out head by head, each head's block holding its q, k
    and v in turn (guided-diffusion's legacy order, which the checkpoint was trained with).
    """

    def __init__(self, channels: int, num_heads: int = 1, num_head_channels: int = -1) -> None:
        super().__init__()
        if num_head_channels == -1:
            self.num_heads = num_heads
        elif channels % num_head_channels:
            raise ValueError(f"{channels} attention channels do not split into heads of {num_head_channels}")
        else:
            self.num_heads = channels // num_head_channels
        self.norm = Float32GroupNorm(NORM_GROUPS, channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, *spatial = x.shape
        flat = x.reshape(batch, channels, -1)
        qkv = self.qkv(self.norm(flat))
        head_channels = channels // self.num_heads
        heads = qkv.reshape(batch * self.num_heads, 3 * head_channels, -1).transpose(1, 2)
        query, key, value = heads.split(head_channels, dim=2)
        attended = F.scaled_dot_product_attention(query, key, value)  # softmax(q·kᵀ/√d)·v per head
        attended = attended.transpose(1, 2).reshape(batch, channels, -1)
        return (flat + self.proj_out(attended)).reshape(batch, channels, *spatial)


class Downsample(nn.Module):
    """A stride-2 3×3 convolution, guided-diffusion's downsampling when `resblock_updown` is off."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest-neighbour doubling then a 3×3 convolution, the upsampling when `resblock_updown` is off."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class EmbeddingSequential(nn.Sequential):
    """Layers applied in turn, the residual blocks also receiving the time embedding."""

    def forward(self, x: Tensor, embedding: Tensor) -> Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, embedding) if isinstance(layer, ResBlock) else layer(x)
        return x


class GuidedUNet(nn.Module):
    """guided-diffusion's UNetModel, unconditional: (x, integer DDPM steps) → `out_channels` maps at x's size,
    the first three of the published model being ε̂ and the last three its learned variance.

    The defaults are the published 256×256 unconditional model (guided-diffusion's create_model with DiffPure's
    configs/imagenet.yml). `attention_resolutions` are downsampling rates (8 = attention at 256/8 = 32 pixels),
    as in UNetModel, not the pixel sizes of script_util's string. `num_heads` counts only when
    `num_head_channels` is -1.
    """

    def __init__(
        self,
        image_size: int = 256,
        in_channels: int = 3,
        out_channels: int = 6,
        model_channels: int = 256,
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (8, 16, 32),
        channel_mult: Sequence[float] = (1, 1, 2, 2, 4, 4),
        num_head_channels: int = 64,
        num_heads: int = 4,
        use_scale_shift_norm: bool = True,
        resblock_updown: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if image_size % 2 ** (len(channel_mult) - 1):
            raise ValueError(f"image_size {image_size} must halve {len(channel_mult) - 1} times")
        self.image_size = image_size
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.model_channels = model_channels
        self.trunk_dtype = torch.float32
        embedding_dim = 4 * model_channels

        def res_block(channels: int, out: int | None = None, resample: str | None = None) -> ResBlock:
            return ResBlock(channels, embedding_dim, out, use_scale_shift_norm, resample, dropout)

        def attention(channels: int) -> AttentionBlock:
            return AttentionBlock(channels, num_heads, num_head_channels)

        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, embedding_dim), nn.SiLU(), nn.Linear(embedding_dim, embedding_dim)
        )

        channels = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([EmbeddingSequential(nn.Conv2d(in_channels, channels, 3, padding=1))])
        skip_channels = [channels]  # what each input block hands the decoder, popped in reverse
        rate = 1
        for level, mult in enumerate(channel_mult):
            width = int(mult * model_channels)
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [res_block(channels, width)]
                channels = width
                if rate in attention_resolutions:
                    layers.append(attention(channels))
                self.input_blocks.append(EmbeddingSequential(*layers))
                skip_channels.append(channels)
            if level < len(channel_mult) - 1:
                down = res_block(channels, resample="down") if resblock_updown else Downsample(channels)
                self.input_blocks.append(EmbeddingSequential(down))
                skip_channels.append(channels)
                rate *= 2

        self.middle_block = EmbeddingSequential(res_block(channels), attention(channels), res_block(channels))

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            width = int(mult * model_channels)
            for index in range(num_res_blocks + 1):
                layers = [res_block(channels + skip_channels.pop(), width)]
                channels = width
                if rate in attention_resolutions:
                    layers.append(attention(channels))
                if level > 0 and index == num_res_blocks:
                    layers.append(res_block(channels, resample="up") if resblock_updown else Upsample(channels))
                    rate //= 2
                self.output_blocks.append(EmbeddingSequential(*layers))

        self.out = nn.Sequential(
            Float32GroupNorm(NORM_GROUPS, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )

    def trunk(self) -> list[nn.Module]:
        return [self.input_blocks, self.middle_block, self.output_blocks]

    def set_trunk_dtype(self, dtype: torch.dtype) -> GuidedUNet:
        """Cast the trunk's convolutions to `dtype` (float16 is guided-diffusion's `convert_to_fp16`, float32
        undoes it); activations then flow through the trunk in `dtype`. Returns the model."""
        for part in self.trunk():
            for module in part.modules():
                if isinstance(module, (nn.Conv1d, nn.Conv2d)):
                    module.to(dtype)
        self.trunk_dtype = dtype
        return self

    def forward(self, x: Tensor, timesteps: Tensor) -> Tensor:
        """x (B, in_channels, H, W) with H and W divisible by 2**(levels-1); timesteps (B,) DDPM steps (0-999 in
        training; any number is accepted)."""
        embedding = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        h = x.to(self.trunk_dtype)
        skips = []
        for block in self.input_blocks:
            h = block(h, embedding)
            skips.append(h)
        h = self.middle_block(h, embedding)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), embedding)
        return self.out(h.to(self.out[-1].weight.dtype))


class GuidedNoisePredictor(NoisePredictor):
    """ε̂(x, t) from a guided-diffusion UNet the way DiffPure calls it: the step is long(1000·t) (truncated in
    float32, so t = 1 gives 1000, one past the last training step, as in DiffPure), and only the first C output
    channels (ε̂) are kept; the learned-variance channels are dropped. t outside [0,1] is not checked.
    """

    def __init__(self, unet: GuidedUNet, name: str | None = None) -> None:
        super().__init__()
        self.unet = unet
        self.image_shape = (unet.in_channels, unet.image_size, unet.image_size)
        self.name = name or f"guided_diffusion_{unet.image_size}x{unet.image_size}_uncond"

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        timesteps = (t.float() * NUM_TIMESTEPS).long()
        return self.unet(x, timesteps)[:, : self.image_shape[0]]


def check_state_dict(state: object, expected: dict[str, Tensor], path: Path) -> dict[str, Tensor]:
    """`state` if it holds exactly `expected`'s names with their shapes; otherwise a CheckpointError naming `path`
    and the first few differences."""
    if not isinstance(state, dict) or not all(isinstance(value, Tensor) for value in state.values()):
        raise CheckpointError(
            f"checkpoint {path} is not a plain state dict of tensors (got {type(state).__name__}), as "
            f"256x256_diffusion_uncond.pt is"
        )
    problems = [f"missing {name}" for name in expected if name not in state]
    problems += [f"unexpected {name}" for name in state if name not in expected]
    problems += [
        f"{name} has shape {tuple(state[name].shape)}, the model {tuple(tensor.shape)}"
        for name, tensor in expected.items()
        if name in state and state[name].shape != tensor.shape
    ]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise CheckpointError(
            f"checkpoint {path} does not fit guided-diffusion's unconditional UNet ({len(problems)} mismatches: "
            f"{shown}). The expected file is 256x256_diffusion_uncond.pt from {CHECKPOINT_URL} (the "
            f"class-conditional 256x256_diffusion.pt has an extra label_emb.weight)."
        )
    return state


def load_guided_unet(checkpoint: str | Path, fp16: bool | None = None, **architecture: object) -> GuidedNoisePredictor:
    """The published 256×256 unconditional model from `checkpoint` (a plain float32 state dict), loaded strictly,
    in eval mode with gradients off, on the CPU: move it to the GPU yourself.

    fp16: run the trunk in float16 as DiffPure does (`GuidedUNet.set_trunk_dtype`); None means True when CUDA is
    available (where it halves memory and time) and False otherwise (the CPU runs float32). `architecture`
    overrides GuidedUNet's constructor arguments, for small test models; the defaults are the published model.

    The ~550M-parameter model is built on the meta device and the checkpoint's tensors are adopted in place
    (`assign=True`), so nothing is allocated or initialised twice. A missing file, one torch cannot read, or one
    whose names or shapes differ raises CheckpointError naming the file.
    """
    path = Path(checkpoint)
    if not path.exists():  # a folder or a device in its place is named by load_checkpoint
        raise CheckpointError(
            f"guided-diffusion checkpoint {path} does not exist. Download 256x256_diffusion_uncond.pt from "
            f"{CHECKPOINT_URL} (linked from the READMEs of openai/guided-diffusion and NVlabs/DiffPure) and put it "
            f"at {path}."
        )
    state = load_checkpoint(path)
    with torch.device("meta"):
        unet = GuidedUNet(**architecture)  # type: ignore[arg-type]
    state = check_state_dict(state, unet.state_dict(), path)
    unet.load_state_dict({name: tensor.float() for name, tensor in state.items()}, strict=True, assign=True)
    if fp16 is None:
        fp16 = torch.cuda.is_available()
    if fp16:
        unet.set_trunk_dtype(torch.float16)
    return GuidedNoisePredictor(unet).eval().requires_grad_(False)
