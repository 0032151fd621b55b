"""Regenerate the DDPM++ reference data from score_sde's own model code; run once, never by the tests.

Needs a checkout of https://github.com/yang-song/score_sde_pytorch (the files were made from commit
cb1f359f4aadf0ff9a5e122fe8fffc9451fd6e44) and only torch and numpy: the config is a plain namespace, not
ml_collections, and the `op` package (CUDA kernels compiled on import, used only by the FIR resampling this config
does not use) is replaced by an empty stub.

    OMP_NUM_THREADS=2 python tests/score_models/data/make_ddpmpp_fixtures.py /path/to/score_sde_pytorch

writes, next to this script:

- `ddpmpp_cifar10_manifest.json`: name and shape of every state_dict entry of their NCSNpp built with
  `configs/vp/cifar10_ddpmpp_deep_continuous.py`, in order, the parameters() order, and each GroupNorm's group count
  and eps (not visible in the tensors), so our network can be checked against the published checkpoint's layout
  without the 400 MB file;
- `ddpmpp_tiny_parity.pt`: their network at a tiny size with seeded, perturbed weights (init_scale 0 zero-initialises
  the last conv of every block, which would hide those layers), a fixed input batch, labels and the eval-mode output.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import torch

HERE = Path(__file__).resolve().parent

# configs/vp/cifar10_ddpmpp_deep_continuous.py on top of configs/default_cifar10_configs.py: the model fields
# NCSNpp reads. DiffPure's configs/cifar10.yml repeats the same values.
PUBLISHED = {
    "nf": 128,
    "ch_mult": (1, 2, 2, 2),
    "num_res_blocks": 8,
    "attn_resolutions": (16,),
    "dropout": 0.1,
    "image_size": 32,
}
TINY = {"nf": 8, "ch_mult": (1, 2), "num_res_blocks": 1, "attn_resolutions": (8,), "dropout": 0.1, "image_size": 16}


def score_sde_config(nf, ch_mult, num_res_blocks, attn_resolutions, dropout, image_size) -> SimpleNamespace:
    model = SimpleNamespace(
        name="ncsnpp",
        nf=nf,
        ch_mult=ch_mult,
        num_res_blocks=num_res_blocks,
        attn_resolutions=attn_resolutions,
        dropout=dropout,
        resamp_with_conv=True,
        conditional=True,
        fir=False,
        fir_kernel=[1, 3, 3, 1],
        skip_rescale=True,
        resblock_type="biggan",
        progressive="none",
        progressive_input="none",
        progressive_combine="sum",
        attention_type="ddpm",
        init_scale=0.0,
        embedding_type="positional",
        fourier_scale=16,
        conv_size=3,
        nonlinearity="swish",
        normalization="GroupNorm",
        scale_by_sigma=False,
        sigma_min=0.01,
        sigma_max=50,
        num_scales=1000,
        beta_min=0.1,
        beta_max=20.0,
    )
    data = SimpleNamespace(image_size=image_size, num_channels=3, centered=True)
    return SimpleNamespace(model=model, data=data, training=SimpleNamespace(continuous=True, sde="vpsde"))


def import_ncsnpp(score_sde: Path):
    op = types.ModuleType("op")  # stands in for the CUDA-kernel package; FIR paths are never built

    def upfirdn2d(*args, **kwargs):
        raise NotImplementedError("FIR resampling is not part of this config")

    op.upfirdn2d = upfirdn2d
    sys.modules["op"] = op
    sys.path.insert(0, str(score_sde))
    from models import ncsnpp  # their code, imported from the checkout

    return ncsnpp


def manifest(ncsnpp) -> dict:
    torch.manual_seed(0)
    network = ncsnpp.NCSNpp(score_sde_config(**PUBLISHED))
    state = network.state_dict()
    parameters = [name for name, _ in network.named_parameters()]
    buffers = [name for name, _ in network.named_buffers()]
    in_state_order = [name for name in state if name not in buffers]
    return {
        "source": "score_sde_pytorch models/ncsnpp.py NCSNpp, configs/vp/cifar10_ddpmpp_deep_continuous.py",
        "config": PUBLISHED,
        "state_dict": [[name, list(tensor.shape)] for name, tensor in state.items()],
        "non_float32": {name: str(tensor.dtype) for name, tensor in state.items() if tensor.dtype != torch.float32},
        # not visible in the tensors: GroupNorm's group count (capped at 32) and eps
        "group_norms": {
            name: [module.num_groups, module.eps]
            for name, module in network.named_modules()
            if isinstance(module, torch.nn.GroupNorm)
        },
        "buffers": buffers,
        "parameters_order_equals_state_dict_order": parameters == in_state_order,
        "parameters": parameters if parameters != in_state_order else "same as state_dict without buffers",
        "parameter_count": sum(p.numel() for p in network.parameters()),
        "requires_grad_parameter_count": sum(1 for p in network.parameters() if p.requires_grad),
    }


def tiny_parity(ncsnpp) -> dict:
    torch.manual_seed(1234)
    network = ncsnpp.NCSNpp(score_sde_config(**TINY))
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    network.eval()
    x = torch.randn(3, 3, TINY["image_size"], TINY["image_size"])
    labels = 999 * torch.tensor([0.001, 0.37, 0.95])
    with torch.no_grad():
        output = network(x, labels)
    return {"config": TINY, "state_dict": network.state_dict(), "x": x, "labels": labels, "output": output}


def one_entry_per_line(record: dict) -> str:
    """JSON with each top-level field, and each element of a list or dict field, on its own line: readable diffs."""
    lines = []
    for key, value in record.items():
        if isinstance(value, list):
            items = ",\n".join(f"  {json.dumps(item)}" for item in value)
            lines.append(f"{json.dumps(key)}: [\n{items}\n ]")
        elif isinstance(value, dict):
            items = ",\n".join(f"  {json.dumps(name)}: {json.dumps(item)}" for name, item in value.items())
            lines.append(f"{json.dumps(key)}: {{\n{items}\n }}")
        else:
            lines.append(f"{json.dumps(key)}: {json.dumps(value)}")
    return "{\n " + ",\n ".join(lines) + "\n}\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("score_sde", type=Path, help="checkout of yang-song/score_sde_pytorch")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    ncsnpp = import_ncsnpp(args.score_sde.resolve())
    (args.out / "ddpmpp_cifar10_manifest.json").write_text(one_entry_per_line(manifest(ncsnpp)))
    torch.save(tiny_parity(ncsnpp), args.out / "ddpmpp_tiny_parity.pt")


if __name__ == "__main__":
    main()
