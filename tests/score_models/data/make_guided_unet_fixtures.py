"""Write the guided-diffusion test data beside this script by running openai/guided-diffusion's own code.

It needs a checkout of https://github.com/openai/guided-diffusion (its `guided_diffusion` package is imported
from the path given; only unet.py, nn.py, fp16_util.py, logger.py and script_util.py's imports are touched, none
of which needs mpi4py or blobfile). It was run once, by hand, and its outputs are committed; the tests never run it:

    python tests/score_models/data/make_guided_unet_fixtures.py /path/to/guided-diffusion

Outputs:

- `guided_unet_256_uncond_manifest.json`: the name and shape of every tensor in the state dict of the model that
  DiffPure builds for `256x256_diffusion_uncond.pt`, in order. The model is built on the meta device, so no
  memory is allocated and nothing is initialised.
- `guided_unet_tiny_parity.pt`: a tiny UNetModel with every parameter set to a random value (their zero-initialised
  layers included, so every layer matters), its input, integer timesteps and output in float32 (and in float16
  after their `convert_to_fp16`). To keep the file small, each parameter is stored as 4-bit codes c in [-8, 7]
  with a per-tensor power-of-two step: the value c * 2**exponent is exact in float32, and the reference model ran
  with exactly these values.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent

# DiffPure's configs/imagenet.yml model section, applied over guided-diffusion's model_and_diffusion_defaults().
DIFFPURE_IMAGENET = {
    "attention_resolutions": "32,16,8",
    "class_cond": False,
    "diffusion_steps": 1000,
    "rescale_timesteps": True,
    "timestep_respacing": "1000",
    "image_size": 256,
    "learn_sigma": True,
    "noise_schedule": "linear",
    "num_channels": 256,
    "num_head_channels": 64,
    "num_res_blocks": 2,
    "resblock_updown": True,
    "use_fp16": True,
    "use_scale_shift_norm": True,
}

# The tiny model: both resolutions, attention at the lower one and in the middle, resblock up/down sampling,
# scale-shift norm, 1x1 skip convolutions (the decoder concatenates skips), learned-sigma output channels.
TINY = {
    "image_size": 16,
    "in_channels": 3,
    "model_channels": 32,
    "out_channels": 6,
    "num_res_blocks": 1,
    "attention_resolutions": (2,),
    "channel_mult": (1, 1),
    "num_head_channels": 16,
    "use_scale_shift_norm": True,
    "resblock_updown": True,
}


def write_manifest(source: str) -> None:
    from guided_diffusion.script_util import create_model_and_diffusion, model_and_diffusion_defaults

    settings = model_and_diffusion_defaults()
    settings.update(DIFFPURE_IMAGENET)
    with torch.device("meta"):
        model, _ = create_model_and_diffusion(**settings)
    parameters = [[name, list(tensor.shape)] for name, tensor in model.state_dict().items()]
    header = {
        "source": source,
        "settings": settings,
        "parameter_count": sum(math.prod(shape) for _, shape in parameters),
    }
    # One [name, shape] per line, so a diff of the file reads as a diff of the architecture.
    rows = ",\n".join(f"  {json.dumps(row)}" for row in parameters)
    text = json.dumps(header, indent=1)[:-2] + f',\n "parameters": [\n{rows}\n ]\n}}\n'
    json.loads(text)
    (HERE / "guided_unet_256_uncond_manifest.json").write_text(text)


def quantize(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """4-bit codes (as integers in [-8, 7]) and the exponent of the step that scales them to about `tensor`."""
    exponent = math.ceil(math.log2(tensor.abs().max().item() / 7))
    return torch.round(tensor / 2.0**exponent).clamp(-8, 7), exponent


def pack(codes: torch.Tensor) -> torch.Tensor:
    nibbles = (codes.flatten() + 8).to(torch.uint8)
    if len(nibbles) % 2:
        nibbles = torch.cat([nibbles, torch.tensor([8], dtype=torch.uint8)])
    return nibbles[0::2] << 4 | nibbles[1::2]


def write_parity_fixture(source: str) -> None:
    from guided_diffusion.unet import UNetModel

    torch.manual_seed(0)
    model = UNetModel(**TINY).eval()
    weights = {}
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            spread = 1 / math.sqrt(parameter[0].numel()) if parameter.ndim > 1 else 0.2
            codes, exponent = quantize(parameter + spread * torch.randn_like(parameter))
            parameter.copy_(codes * 2.0**exponent)
            weights[name] = {"codes": pack(codes), "exponent": exponent, "shape": list(parameter.shape)}
    x = torch.randn(3, 3, 16, 16)
    timesteps = torch.tensor([0, 250, 1000])  # 250 = long(1000 * float32(0.251)), DiffPure's truncation

    # Every parameter tensor must reach the output, or parity would not test it.
    probe = model(x, timesteps)
    (probe * torch.randn_like(probe)).sum().backward()
    inert = [name for name, parameter in model.named_parameters() if not parameter.grad.abs().sum() > 0]
    assert not inert, f"parameters without influence on the output: {inert}"

    with torch.no_grad():
        output = model(x, timesteps)
        model.convert_to_fp16()
        model.dtype = torch.float16  # what use_fp16=True sets in their constructor
        output_fp16 = model(x, timesteps)
    fixture = {
        "source": source,
        "config": TINY,
        "weights": weights,
        "x": x,
        "timesteps": timesteps,
        "output": output,
        "output_fp16": output_fp16,
    }
    torch.save(fixture, HERE / "guided_unet_tiny_parity.pt")


def main() -> None:
    checkout = Path(sys.argv[1]).resolve()
    sys.path.insert(0, str(checkout))
    try:
        commit = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = sys.argv[2] if len(sys.argv) > 2 else "unknown commit"
    source = f"openai/guided-diffusion@{commit}, torch {torch.__version__}"
    write_manifest(source)
    write_parity_fixture(source)


if __name__ == "__main__":
    main()
