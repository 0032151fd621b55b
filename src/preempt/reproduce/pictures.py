"""The Fast Preemption paper's perturbation pictures (`python -m preempt.commands.pictures OUT_DIR [overrides]`).

Figure 4 (`figure4_perturbations.png`): for the dataset's first images, the original x, the protected x^r, the
protection's δ_Gray (Eq. 14), the attack's adversarial example made against the victim on the original x and its
δ_Gray, and whether the protected image then survives the same attack ("Success") or not ("Failure").
Figure 5 (`figure5_reversion.png`): the same images protected by two runs of the same defense settings with
different seeds (the paper's point: mostly the same perturbation, which is what Preemptive Reversion exploits),
and what is left of the perturbation (reverted − original) after Preemptive Reversion, white-box and black-box.
Figure 7 (`figure7_backbones.png`): the same images and the δ_Gray of the protection each of several backbones
gives (`backbone=<option>` over the overrides), with the SSIM of each δ_Gray and the gray original (the paper's
point: adversarially trained backbones learn features visually similar to the objective).
`pictures.json` holds every number the pictures show.

Everything is built from conf/main.yaml with the overrides, as `src/main.py` builds a run: the test loop's module
(`PreemptiveEvaluation`) gives the sender's labels, the protection, the attack on the victim and the reversions,
and torch is seeded as the loop seeds a batch of exactly these images, so a rerun draws the same pictures (with
`transmit_8bit=true` the protected images are the 8-bit ones a run sends). The reversions are
`reversion=preemptive_reversion` and `reversion=preemptive_reversion_black_box` (a `reversion=` override is
replaced; `reversion.*` settings apply to both).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor
from torchmetrics.functional.image import structural_similarity_index_measure

from preempt.assembly import Assembly, SharedModels
from preempt.attacks.base import random_targets
from preempt.config import compose_run, composer
from preempt.datasets.base import ImageDataset
from preempt.evaluation.module import PreemptiveEvaluation
from preempt.files import write_json_atomically
from preempt.parts import ConfigError, revert
from preempt.randomness import per_sample_streams, seed_batch
from preempt.threat import distance, to_8bit
from preempt.validation import check_parts_fit_dataset, validate_config

NTSC_WEIGHTS = (0.299, 0.587, 0.114)  # Eq. 14: the NTSC luma of the red, green and blue channels
FIGURE4_FILE = "figure4_perturbations.png"
FIGURE5_FILE = "figure5_reversion.png"
FIGURE7_FILE = "figure7_backbones.png"
# Figure 7's default columns: the digits zoo's backbones of Table VII (adversarially trained CNN, MLP, standard CNN).
FIGURE7_BACKBONES = ("digits_cnn_at", "digits_mlp", "digits_cnn")
NUMBERS_FILE = "pictures.json"
REVERSIONS = ("preemptive_reversion", "preemptive_reversion_black_box")  # Figure 5's columns, as conf/reversion/
DIGITS = 4  # decimals kept in pictures.json, so reruns compare equal as text


def ntsc_gray(delta: Tensor, eps: float) -> Tensor:
    """Eq. 14: δ_RGB = (δ + ε)/(2ε) maps the budget [−ε, ε] to [0, 1], then the NTSC luma 0.299R + 0.587G + 0.114B
    (a 1-channel δ is its δ_RGB). (..., C, H, W) → (..., H, W); a δ beyond ±ε falls outside [0, 1]."""
    return luma((delta + eps) / (2 * eps))


def luma(image: Tensor) -> Tensor:
    """The NTSC gray of images: 0.299R + 0.587G + 0.114B, a 1-channel image itself. (..., C, H, W) → (..., H, W)."""
    channels = image.shape[-3]
    if channels == 1:
        return image[..., 0, :, :]
    if channels != len(NTSC_WEIGHTS):
        raise ValueError(f"the NTSC gray (δ_Gray) takes 1 or 3 channels (C, H, W), got {channels}")
    weights = torch.tensor(NTSC_WEIGHTS, dtype=image.dtype, device=image.device)
    return torch.einsum("...chw,c->...hw", image, weights)


def perturbation_similarity(first: Tensor, second: Tensor) -> dict[str, Tensor]:
    """Per image: the cosine of the two perturbations, and among the pixels both move, the share they move the
    same way (a random sign pattern scores about 0 and 0.5)."""
    a, b = first.flatten(1), second.flatten(1)
    both_move = (a != 0) & (b != 0)
    agreeing = (a.sign() == b.sign()) & both_move
    return {
        "cosine": F.cosine_similarity(a, b, dim=1, eps=1e-12),
        "sign_agreement": agreeing.sum(dim=1) / both_move.sum(dim=1).clamp_min(1),
    }


def rounded(values: Tensor | float) -> list | float:
    """Numbers for pictures.json, at `DIGITS` decimals."""
    return torch.as_tensor(values, dtype=torch.float64).cpu().round(decimals=DIGITS).tolist()


@contextlib.contextmanager
def composed(overrides: list[str], out_dir: Path) -> Iterator[dict[str, DictConfig]]:
    """conf/main.yaml with the overrides, once per Preemptive Reversion of Figure 5 (keyed by its option). Hydra's
    choices are set while in use, so refusals name the option the user picked."""
    with composer():
        yield {option: compose_run("main", [*overrides, f"reversion={option}"], out_dir) for option in REVERSIONS}


def backbone_configs(overrides: list[str], out_dir: Path, backbones: list[str]) -> dict[str, DictConfig]:
    """Figure 7's configs, one per backbone option (inside `composed`)."""
    return {name: compose_run("main", [*overrides, f"backbone={name}"], out_dir) for name in backbones}


def evaluation_module(cfg: DictConfig, shared: SharedModels, dataset: ImageDataset) -> PreemptiveEvaluation:
    """The test loop's module for this config, built as a run builds it (models from `shared`)."""
    assembly = Assembly(cfg, shared)
    check_parts_fit_dataset(assembly.config, dataset)
    return assembly.evaluation(dataset)


@contextlib.contextmanager
def seeded(module: PreemptiveEvaluation, seed: int, index: Tensor) -> Iterator[None]:
    """Torch as the test loop seeds the batch of these images (`test_step`), so each stage repeats on its own."""
    seed_batch(seed, int(index[0]))
    streams = per_sample_streams(seed, index) if module.per_sample_randomness else contextlib.nullcontext()
    with streams:
        yield


def per_image(columns: dict[str, list]) -> list[dict]:
    """Columns of per-image values as one record per image."""
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def protect(module: PreemptiveEvaluation, x: Tensor, y: Tensor, index: Tensor, seed: int) -> tuple[Tensor, Tensor]:
    """The sender's labels and the protected images it sends, as a run with this seed protects this batch."""
    with seeded(module, seed, index):
        labels = module.labels(x, y, index)
        protected, _ = module.protect(x, labels)
    return labels, to_8bit(protected) if module.transmit_8bit else protected


def figure4_numbers(module: PreemptiveEvaluation, x: Tensor, y: Tensor, index: Tensor) -> tuple[dict, list[dict]]:
    """Protect, then attack the originals and the protected images in one batch; the tensors drawn and each
    image's numbers."""
    labels, protected = protect(module, x, y, index, module.seed)
    with seeded(module, module.seed, index.repeat(2)):  # each original and its protection: one sample's stream
        target = random_targets(y.repeat(2), module.num_classes) if module.attack.targeted else None
        attacked = module.run_attack(torch.cat([x, protected]), y.repeat(2), target)
    attacked_original, attacked_protected = attacked.chunk(2)
    survived = module.predict(attacked_protected) == y
    numbers = per_image(
        {
            "index": index.tolist(),
            "label": y.tolist(),
            "sender_label": labels.tolist(),
            "victim_original": module.predict(x).tolist(),
            "victim_protected": module.predict(protected).tolist(),
            "victim_attacked_original": module.predict(attacked_original).tolist(),
            "victim_attacked_protected": module.predict(attacked_protected).tolist(),
            "ssim": rounded(structural_similarity_index_measure(protected, x, data_range=1.0, reduction="none")),
            "linf_protection": rounded(distance(protected, x, "Linf")),
            "linf_attack": rounded(distance(attacked_original, x, "Linf")),
            "cosine_protection_attack": rounded(
                perturbation_similarity(protected - x, attacked_original - x)["cosine"]
            ),
            "success": survived.tolist(),
        }
    )
    tensors = {
        "protected": protected,
        "attacked_original": attacked_original,
        "attacked_protected": attacked_protected,
    }
    return tensors, numbers


def figure5_numbers(
    modules: dict[str, PreemptiveEvaluation], x: Tensor, y: Tensor, index: Tensor, protected: Tensor
) -> tuple[dict, dict]:
    """A second protection with the next seed, and each Preemptive Reversion of the first; tensors and numbers."""
    sender = modules[REVERSIONS[0]]
    second_seed = sender.seed + 1
    _, protected_again = protect(sender, x, y, index, second_seed)
    similarity = perturbation_similarity(protected - x, protected_again - x)
    protection_l2 = distance(protected, x, "L2")
    reverted, reversions = {}, {}
    for option, module in modules.items():
        with seeded(module, module.seed, index):
            reverted[option] = revert(module.reversion, protected, y, index)
        left_l2 = distance(reverted[option], x, "L2")
        erased = 1 - left_l2 / protection_l2.clamp_min(1e-12)
        reversions[option] = {
            "knowledge": module.reversion.knowledge,
            "mean_erased": rounded(erased.mean()),
            "images": per_image(
                {
                    "l2_protected_to_original": rounded(protection_l2),
                    "l2_reverted_to_original": rounded(left_l2),
                    "linf_reverted_to_original": rounded(distance(reverted[option], x, "Linf")),
                    "erased": rounded(erased),
                    "victim_reverted": module.predict(reverted[option]).tolist(),
                }
            ),
        }
    numbers = {
        "seeds": [sender.seed, second_seed],
        "two_runs": {
            "mean_cosine": rounded(similarity["cosine"].mean()),
            "mean_sign_agreement": rounded(similarity["sign_agreement"].mean()),
            "images": per_image(
                {"cosine": rounded(similarity["cosine"]), "sign_agreement": rounded(similarity["sign_agreement"])}
            ),
        },
        "reversions": reversions,
    }
    return {"protected_again": protected_again, "reverted": reverted}, numbers


def figure7_numbers(
    modules: dict[str, PreemptiveEvaluation], x: Tensor, y: Tensor, index: Tensor, eps: float
) -> tuple[dict[str, Tensor], dict]:
    """Each backbone's protection of the images as a run makes it, its δ_Gray, and per image the SSIM of that
    δ_Gray with the gray original (how much the perturbation looks like the objective)."""
    original = luma(x)[:, None]
    grays, numbers = {}, {}
    for name, module in modules.items():
        _, protected = protect(module, x, y, index, module.seed)
        grays[name] = ntsc_gray(protected - x, eps)
        ssim = structural_similarity_index_measure(grays[name][:, None], original, data_range=1.0, reduction="none")
        numbers[name] = {
            "mean_ssim_to_original": rounded(ssim.mean()),
            "images": per_image(
                {
                    "ssim_to_original": rounded(ssim),
                    "linf_protection": rounded(distance(protected, x, "Linf")),
                    "victim_protected": module.predict(protected).tolist(),
                }
            ),
        }
    return grays, numbers


def shown(image: Tensor) -> tuple:
    """An image tensor as imshow takes it, with its color map."""
    if image.dim() == 2 or image.shape[0] == 1:
        return image.reshape(image.shape[-2:]).cpu().numpy(), "gray"
    return image.permute(1, 2, 0).cpu().numpy(), None


def draw_grid(rows: list[list[tuple[Tensor, str]]], columns: list[str], title: str, out: Path) -> Path:
    """One row per image: each panel its picture (an image, or a δ_Gray in gray) and its caption."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(rows), len(columns), figsize=(2.2 * len(columns), 2.3 * len(rows) + 0.7))
    axes = axes.reshape(len(rows), len(columns))
    for row, panels in enumerate(rows):
        for column, (picture, caption) in enumerate(panels):
            pixels, cmap = shown(picture)
            axis = axes[row][column]
            axis.imshow(pixels, cmap=cmap, vmin=0, vmax=1)
            axis.set(xticks=[], yticks=[])
            axis.set_xlabel(caption, fontsize=8)
    for column, name in enumerate(columns):
        axes[0][column].set_title(name, fontsize=9)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out


def draw_figure4(x: Tensor, tensors: dict, images: list[dict], eps: float, attack: str, out: Path) -> Path:
    protection_gray = ntsc_gray(tensors["protected"] - x, eps)
    attack_gray = ntsc_gray(tensors["attacked_original"] - x, eps)
    rows = [
        [
            (x[i], f"label {image['label']}, victim {image['victim_original']}"),
            (tensors["protected"][i], f"SSIM {image['ssim']:.3f}, victim {image['victim_protected']}"),
            (protection_gray[i], f"L∞ {image['linf_protection']:.3g}"),
            (tensors["attacked_original"][i], f"victim {image['victim_attacked_original']}"),
            (attack_gray[i], f"cos with protection {image['cosine_protection_attack']:.2f}"),
            (
                tensors["attacked_protected"][i],
                f"{'Success' if image['success'] else 'Failure'}: victim {image['victim_attacked_protected']}",
            ),
        ]
        for i, image in enumerate(images)
    ]
    columns = ["original x", "protected x^r", "δ_Gray protection", f"{attack} on x", f"δ_Gray {attack}"]
    columns.append(f"{attack} on x^r")
    mean_ssim = sum(image["ssim"] for image in images) / len(images)
    survived = sum(image["success"] for image in images)
    title = (
        f"Figure 4: Fast Preemption vs {attack} on the victim (ε={eps:.4g}): mean SSIM {mean_ssim:.3f}, "
        f"{survived}/{len(images)} protected images survive"
    )
    return draw_grid(rows, columns, title, out)


def draw_figure5(x: Tensor, protected: Tensor, tensors: dict, numbers: dict, eps: float, out: Path) -> Path:
    runs, reversions = numbers["two_runs"], numbers["reversions"]
    first_seed, second_seed = numbers["seeds"]
    rows = []
    for i, run in enumerate(runs["images"]):
        panels = [
            (x[i], "original"),
            (ntsc_gray(protected[i] - x[i], eps), "δ_Gray before reversion"),
            (
                ntsc_gray(tensors["protected_again"][i] - x[i], eps),
                f"cos {run['cosine']:.2f}, signs agree {run['sign_agreement']:.0%}",
            ),
        ]
        for option, reverted in tensors["reverted"].items():
            erased = reversions[option]["images"][i]["erased"]
            panels.append((ntsc_gray(reverted[i] - x[i], eps), f"{erased:.0%} of ‖δ‖₂ erased"))
        rows.append(panels)
    columns = ["original x", f"δ run 1 (seed {first_seed})", f"δ run 2 (seed {second_seed})"]
    columns += [f"δ after {entry['knowledge']} reversion" for entry in reversions.values()]
    erased = ", ".join(f"{entry['knowledge']} erases {entry['mean_erased']:.0%}" for entry in reversions.values())
    title = (
        f"Figure 5: two runs, same settings: cosine {runs['mean_cosine']:.2f}, signs agree "
        f"{runs['mean_sign_agreement']:.0%}; Preemptive Reversion (x̃ − x): {erased}"
    )
    return draw_grid(rows, columns, title, out)


def draw_figure7(x: Tensor, grays: dict[str, Tensor], backbones: dict, out: Path) -> Path:
    rows = [
        [(x[i], "original")]
        + [
            (grays[name][i], f"SSIM {numbers['images'][i]['ssim_to_original']:.3f}")
            for name, numbers in backbones.items()
        ]
        for i in range(len(x))
    ]
    columns = ["original x", *(f"δ_Gray {name}" for name in backbones)]
    similarity = ", ".join(f"{name} {numbers['mean_ssim_to_original']:.3f}" for name, numbers in backbones.items())
    title = f"Figure 7: δ_Gray of each backbone's protection\nSSIM with the gray original: {similarity}"
    return draw_grid(rows, columns, title, out)


def prepared(
    configs: dict[str, DictConfig], n_images: int, shared: SharedModels | None = None
) -> tuple[dict[str, PreemptiveEvaluation], ImageDataset]:
    """The validated configs' modules (sharing their models, and those `shared` built) on the device, and the
    dataset; as a run, every check comes before any model is built."""
    for cfg in configs.values():
        for warning in validate_config(cfg):
            print(f"warning: {warning}")
    sender_cfg = configs[REVERSIONS[0]]
    L.seed_everything(sender_cfg.seed, workers=True, verbose=False)
    dataset = instantiate(sender_cfg.dataset)
    if not 1 <= n_images <= len(dataset):
        raise ConfigError(f"--images {n_images}: the dataset holds {len(dataset)} images; pick 1 to {len(dataset)}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shared = shared or SharedModels()
    return {option: evaluation_module(cfg, shared, dataset).to(device) for option, cfg in configs.items()}, dataset


def first_images(dataset: ImageDataset, n_images: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Images, labels and sample indices of the dataset's first `n_images`."""
    return tuple(tensor[:n_images].to(device) for tensor in (dataset.images, dataset.labels, dataset.indices))


def draw_pictures(
    configs: dict[str, DictConfig],
    out_dir: Path,
    n_images: int,
    overrides: list[str],
    backbones: dict[str, DictConfig],
) -> dict:
    """The three figures and pictures.json for the first `n_images` images of the configured dataset; `backbones`
    (Figure 7's configs, `backbone_configs`) are checked with the others before any model is built."""
    for cfg in backbones.values():
        for warning in validate_config(cfg):
            print(f"warning: {warning}")
    shared = SharedModels()
    modules, dataset = prepared(configs, n_images, shared)
    sender = modules[REVERSIONS[0]]
    x, y, index = first_images(dataset, n_images, sender.device)
    sender_cfg = configs[REVERSIONS[0]]
    eps = float(sender_cfg.threat.eps)
    attack = type(sender.attack).__name__
    tensors4, images = figure4_numbers(sender, x, y, index)
    tensors5, numbers5 = figure5_numbers(modules, x, y, index, tensors4["protected"])
    out_dir.mkdir(parents=True, exist_ok=True)
    draw_figure4(x, tensors4, images, eps, attack, out_dir / FIGURE4_FILE)
    draw_figure5(x, tensors4["protected"], tensors5, numbers5, eps, out_dir / FIGURE5_FILE)
    backbone_modules = {
        name: evaluation_module(cfg, shared, dataset).to(sender.device) for name, cfg in backbones.items()
    }
    grays7, numbers7 = figure7_numbers(backbone_modules, x, y, index, eps)
    draw_figure7(x, grays7, numbers7, out_dir / FIGURE7_FILE)
    numbers = {
        "overrides": overrides,
        "dataset": dataset.name,
        "eps": eps,
        "norm": sender_cfg.threat.norm,
        "attack": attack,
        "figure4": {
            "mean_ssim": rounded(sum(image["ssim"] for image in images) / n_images),
            "success_rate": rounded(sum(image["success"] for image in images) / n_images),
            "images": images,
        },
        "figure5": numbers5,
        "figure7": {"backbones": numbers7},
    }
    write_json_atomically(numbers, out_dir / NUMBERS_FILE)
    return numbers
