"""score_sde's DDPM++ noise predictor for CIFAR-10 (`vp/cifar10_ddpmpp_deep_continuous`), the model DiffPure purifies
CIFAR-10 with, written so that the published `checkpoint_8.pth` loads by name.

Only the paths that config uses exist here: BigGAN-style residual blocks (they also do the 2x down- and upsampling,
by average pooling and nearest-neighbour repetition, so the config's `resamp_with_conv` never matters), DDPM
self-attention, sinusoidal (positional) time embedding, skip connections scaled by 1/√2, no FIR filtering, no
progressive input or output pyramid, swish activations, GroupNorm, always time-conditional, centered [-1,1] input,
and no division of the output by σ (`scale_by_sigma` is False, so the network predicts the noise ε̂).

The checkpoint stores every layer in one flat `all_modules` ModuleList, so its keys are `all_modules.<i>.<...>`. The
network below registers its layers in that list, in the original order, and keeps a plan of where each layer sits
in it, grouped by level and block, so the forward pass reads as the U-Net rather than as a running index.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from preempt.checkpoints import CheckpointError, load_checkpoint
from preempt.score_models.base import NoisePredictor

LABEL_SCALE = 999.0  # score_sde feeds a continuous-time VP network its time t in [0,1] as the label 999·t
SKIP_SCALE = 1 / math.sqrt(2.0)  # `skip_rescale`: residual sums are scaled to keep unit variance
NORM_EPS = 1e-6
CHECKPOINT_NAME = "vp/cifar10_ddpmpp_deep_continuous/checkpoint_8.pth"
CHECKPOINT_SOURCES = (
    "the score_sde_pytorch release (Google Drive folder linked under 'Pretrained checkpoints' at "
    "https://github.com/yang-song/score_sde_pytorch); DiffPure's README (https://github.com/NVlabs/DiffPure) links "
    "the file directly: https://drive.google.com/file/d/16_-Ahc6ImZV5ClUc0vM5Iivf8OJ1VSif"
)


def group_norm(channels: int) -> nn.GroupNorm:
    """The original's normalisation: groups of at least 4 channels, at most 32 groups."""
    return nn.GroupNorm(num_groups=min(channels // 4, 32), num_channels=channels, eps=NORM_EPS)


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)


def sinusoidal_embedding(labels: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Transformer-style sin/cos features of the (continuous) labels: half the features sines, half cosines, over
    frequencies from 1 down to 1/max_period; computed in float32 as the original does."""
    half = dim // 2
    frequencies = torch.exp(
        torch.arange(half, dtype=torch.float32, device=labels.device) * -(math.log(max_period) / (half - 1))
    )
    angles = labels.float()[:, None] * frequencies[None, :]
    embedding = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    return F.pad(embedding, (0, 1)) if dim % 2 else embedding


class ChannelDense(nn.Module):
    """A per-pixel linear map over channels (a 1x1 conv), stored as the original's `NIN`: weight `W` shaped
    (in, out), the transpose of a conv's, and bias `b`, so the checkpoint's tensors load unchanged."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.empty(in_channels, out_channels))
        self.b = nn.Parameter(torch.zeros(out_channels))
        nn.init.xavier_uniform_(self.W)

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("bchw,cd->bdhw", x, self.W) + self.b[:, None, None]


class ResidualBlock(nn.Module):
    """BigGAN-style residual block with a time-embedding bias: norm → swish → (resample) → conv → + bias(temb) →
    norm → swish → dropout → conv, added to the (resampled, 1x1-projected when the shape changes) input.

    `resample` is "down" (2x2 average pooling) or "up" (nearest-neighbour 2x) for the blocks between levels. The
    attribute names are the checkpoint's (`GroupNorm_0`, `Conv_0`, `Dense_0`, ...); `Conv_2` exists only when the
    channels or resolution change.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None,
        embedding_dim: int,
        dropout: float,
        resample: str | None = None,
    ) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        if resample not in (None, "up", "down"):
            raise ValueError(f"resample must be None, 'up' or 'down', not {resample!r}")
        self.resample = resample
        self.GroupNorm_0 = group_norm(in_channels)
        self.Conv_0 = conv3x3(in_channels, out_channels)
        self.Dense_0 = nn.Linear(embedding_dim, out_channels)
        self.GroupNorm_1 = group_norm(out_channels)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv3x3(out_channels, out_channels)
        changes_shape = in_channels != out_channels or resample is not None
        self.Conv_2 = nn.Conv2d(in_channels, out_channels, kernel_size=1) if changes_shape else None

    def _resample(self, x: Tensor) -> Tensor:
        if self.resample == "down":
            return F.avg_pool2d(x, 2)
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        return x

    def forward(self, x: Tensor, embedding: Tensor) -> Tensor:
        h = self._resample(F.silu(self.GroupNorm_0(x)))
        x = self._resample(x)
        h = self.Conv_0(h) + self.Dense_0(F.silu(embedding))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(F.silu(self.GroupNorm_1(h))))
        if self.Conv_2 is not None:
            x = self.Conv_2(x)
        return (x + h) * SKIP_SCALE


class SelfAttention(nn.Module):
    """DDPM's single-head self-attention over all pixels, with a residual connection scaled by 1/√2.

    `NIN_0`..`NIN_3` are the query, key, value and output projections."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.GroupNorm_0 = group_norm(channels)
        self.NIN_0 = ChannelDense(channels, channels)
        self.NIN_1 = ChannelDense(channels, channels)
        self.NIN_2 = ChannelDense(channels, channels)
        self.NIN_3 = ChannelDense(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        b, c, height, width = x.shape
        h = self.GroupNorm_0(x)
        # (B, 1 head, H·W tokens, C features); the default scale is 1/√C, as in the original
        q, k, v = (projection(h).reshape(b, 1, c, height * width).transpose(-1, -2) for projection in self.qkv)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(-1, -2).reshape(b, c, height, width)
        return (x + self.NIN_3(attended)) * SKIP_SCALE

    @property
    def qkv(self) -> tuple[ChannelDense, ChannelDense, ChannelDense]:
        return self.NIN_0, self.NIN_1, self.NIN_2


@dataclass(frozen=True)
class _Stage:
    """One resolution of the encoder or decoder, as indices into `all_modules`: its residual blocks, attention (per
    block on the way down, once after the blocks on the way up, None where the resolution has none), and the block
    that changes resolution afterwards, if any."""

    blocks: list[int]
    attention: list[int | None]
    resample: int | None


@dataclass(frozen=True)
class _Plan:
    """Where each layer sits in `all_modules`, grouped as the forward pass uses them. Indices rather than the layers
    themselves: the layers are then registered only by the ModuleList, and copies, device replicas or swapped
    layers stay consistent with the plan."""

    embed: tuple[int, int]
    stem: int
    down: list[_Stage]
    middle: tuple[int, int, int]
    up: list[_Stage]
    head: tuple[int, int]


class DDPMpp(nn.Module):
    """The DDPM++ U-Net (score_sde's `NCSNpp` in the configuration above): (x in [-1,1], labels 999·t) → ε̂.

    Defaults are the published CIFAR-10 model; smaller values build the same architecture for tests. `state_dict()`
    keys, shapes and order, and `parameters()` order, equal the original's (without DataParallel's `module.`).
    Weights are left at PyTorch's default initialisation: the network exists to load trained ones.
    """

    def __init__(
        self,
        nf: int = 128,
        ch_mult: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 8,
        attn_resolutions: Sequence[int] = (16,),
        dropout: float = 0.1,
        image_size: int = 32,
        channels: int = 3,
    ) -> None:
        super().__init__()
        self.nf, self.image_size, self.channels = nf, image_size, channels
        # The original's VE noise levels (σ from 50 down to 0.01, float64). Unused with scale_by_sigma False, but a
        # buffer in the checkpoint, so it is kept for loading by name.
        log_max, log_min = math.log(50.0), math.log(0.01)
        sigmas = [math.exp(log_max + (log_min - log_max) * i / 999) for i in range(1000)]
        self.register_buffer("sigmas", torch.tensor(sigmas, dtype=torch.float64))

        layers: list[nn.Module] = []

        def add(layer: nn.Module) -> int:
            layers.append(layer)
            return len(layers) - 1

        embedding_dim = 4 * nf

        def block(in_ch: int, out_ch: int | None = None, resample: str | None = None) -> int:
            return add(ResidualBlock(in_ch, out_ch, embedding_dim, dropout, resample))

        embed = (add(nn.Linear(nf, embedding_dim)), add(nn.Linear(embedding_dim, embedding_dim)))
        stem = add(conv3x3(channels, nf))
        skip_channels = [nf]  # channels of every activation the encoder hands to the decoder
        levels = len(ch_mult)
        has_attention = [image_size // 2**level in attn_resolutions for level in range(levels)]
        width = nf
        down = []
        for level, mult in enumerate(ch_mult):
            blocks, attention = [], []
            for _ in range(num_res_blocks):
                blocks.append(block(width, nf * mult))
                width = nf * mult
                attention.append(add(SelfAttention(width)) if has_attention[level] else None)
                skip_channels.append(width)
            resample = block(width, resample="down") if level < levels - 1 else None
            if resample is not None:
                skip_channels.append(width)
            down.append(_Stage(blocks, attention, resample))

        middle = (block(width), add(SelfAttention(width)), block(width))

        up = []
        for level in reversed(range(levels)):
            blocks = []
            for _ in range(num_res_blocks + 1):
                blocks.append(block(width + skip_channels.pop(), nf * ch_mult[level]))
                width = nf * ch_mult[level]
            attention = [add(SelfAttention(width)) if has_attention[level] else None]
            resample = block(width, resample="up") if level > 0 else None
            up.append(_Stage(blocks, attention, resample))
        assert not skip_channels

        head = (add(group_norm(width)), add(conv3x3(width, channels)))
        self.all_modules = nn.ModuleList(layers)
        self._plan = _Plan(embed, stem, down, middle, up, head)

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        """x: (B, C, H, W) in [-1,1]; labels: (B,) continuous, 999·t for VP time t. Returns ε̂ shaped like x."""
        plan, layer = self._plan, self.all_modules
        embedding = sinusoidal_embedding(labels, self.nf).to(x.dtype)
        embedding = layer[plan.embed[1]](F.silu(layer[plan.embed[0]](embedding)))

        skips = [layer[plan.stem](x)]
        for stage in plan.down:
            for block, attention in zip(stage.blocks, stage.attention, strict=True):
                h = layer[block](skips[-1], embedding)
                skips.append(layer[attention](h) if attention is not None else h)
            if stage.resample is not None:
                skips.append(layer[stage.resample](skips[-1], embedding))

        first, attention, second = plan.middle
        h = layer[second](layer[attention](layer[first](skips[-1], embedding)), embedding)

        for stage in plan.up:
            for block in stage.blocks:
                h = layer[block](torch.cat([h, skips.pop()], dim=1), embedding)
            if stage.attention[0] is not None:
                h = layer[stage.attention[0]](h)
            if stage.resample is not None:
                h = layer[stage.resample](h, embedding)

        norm, conv = plan.head
        return layer[conv](F.silu(layer[norm](h)))


class DDPMppNoisePredictor(NoisePredictor):
    """ε̂(x, t) from a DDPM++ network: the continuous VP time t becomes the label 999·t it was trained with."""

    def __init__(self, network: DDPMpp, name: str = "score_sde_cifar10_ddpmpp_deep_continuous") -> None:
        super().__init__()
        self.network = network
        self.image_shape = (network.channels, network.image_size, network.image_size)
        self.name = name

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        t = t.reshape(-1).expand(x.shape[0])  # a single time broadcasts over the batch
        return self.network(x, LABEL_SCALE * t)


def load_ddpmpp(checkpoint: str | Path, ema: bool = True, **architecture) -> DDPMppNoisePredictor:
    """The published CIFAR-10 DDPM++ as a frozen, eval-mode noise predictor.

    `checkpoint` is score_sde's training checkpoint ({'optimizer', 'model', 'ema', 'step'}); by default the EMA
    weights are used, as DiffPure does (the EMA's `shadow_params` list follows `parameters()` order and is copied
    positionally after checking count and shapes). `ema=False` takes the raw weights under 'model' instead. A plain
    state dict file is accepted too. A `module.` prefix (the DataParallel wrapper score_sde trained with) is
    stripped. `architecture` is forwarded to `DDPMpp`, for tests and variants.
    """
    path = Path(checkpoint)
    if not path.exists():  # a folder or a device in its place is named by load_checkpoint
        raise CheckpointError(
            f"DDPM++ checkpoint {path} does not exist. Download {CHECKPOINT_NAME} from {CHECKPOINT_SOURCES}, and "
            f"place it at {path}."
        )
    saved = load_checkpoint(path)
    network = DDPMpp(**architecture)
    if _is_training_checkpoint(saved):
        if ema:
            _copy_shadow_params(network, saved["ema"], path)
        else:
            _load_state(network, saved["model"], path, "its 'model' entry")
    elif isinstance(saved, dict) and saved and all(isinstance(value, Tensor) for value in saved.values()):
        _load_state(network, saved, path, "the state dict")
    else:
        raise CheckpointError(
            f"checkpoint {path} is neither a score_sde training checkpoint (a dict with 'model' and 'ema') nor a "
            f"state dict of tensors; expected {CHECKPOINT_NAME}."
        )
    return DDPMppNoisePredictor(network).eval().requires_grad_(False)


def _is_training_checkpoint(saved: object) -> bool:
    return isinstance(saved, dict) and isinstance(saved.get("model"), dict) and isinstance(saved.get("ema"), dict)


def _copy_shadow_params(network: DDPMpp, ema_state: dict, path: Path) -> None:
    shadow = ema_state.get("shadow_params")
    if not isinstance(shadow, list | tuple) or not all(isinstance(tensor, Tensor) for tensor in shadow):
        raise CheckpointError(f"checkpoint {path}: its 'ema' entry has no list of tensors under 'shadow_params'")
    named = list(network.named_parameters())
    if len(shadow) != len(named):
        raise CheckpointError(
            f"checkpoint {path}: its EMA holds {len(shadow)} tensors, the network has {len(named)} parameters; the "
            f"file is for a different architecture than {CHECKPOINT_NAME}"
        )
    for index, ((name, parameter), tensor) in enumerate(zip(named, shadow, strict=True)):
        if tensor.shape != parameter.shape:
            raise CheckpointError(
                f"checkpoint {path}: EMA tensor #{index} is shaped {tuple(tensor.shape)}, but parameter #{index} "
                f"({name}) is {tuple(parameter.shape)}; the file is for a different architecture than "
                f"{CHECKPOINT_NAME}"
            )
    with torch.no_grad():
        for (_, parameter), tensor in zip(named, shadow, strict=True):
            parameter.copy_(tensor)


def _load_state(network: DDPMpp, state: dict, path: Path, what: str) -> None:
    state = {name.removeprefix("module."): tensor for name, tensor in state.items()}
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"checkpoint {path}: {what} does not fit the DDPM++ network: {error}") from error
