"""A folder of the sender's images in, protected 8-bit PNGs out (`preempt protect`, `preempt.commands.protect`).

From the evaluation's configs (`conf/protect.yaml`: classifier, backbone, defense, threat, batch size, speed), for
every PNG, JPEG and WebP file under INPUT_DIR, it writes an 8-bit PNG at the same relative path under OUTPUT_DIR
and a line of `manifest.jsonl` (`preempt.protection.manifest`). What the manifest reports (label,
confidence, Linf, SSIM) is measured on the PNG bytes as written and decoded again, not on the float protection.

Size policy (`protect.resize`):
- `model` (default): the perturbation lives at the file's own resolution, and every classifier and backbone
  pass sees the image resized to the model's input (bilinear, antialiased; the aspect ratio is not kept, so no
  pixel is cropped away unprotected). Gradients flow through the resize, so the protection is found for what
  the model sees, the output keeps the original's size, and the budget holds on the original's pixels. An
  image already at the model's size is not resampled at all.
- `none`: the models see the file's own pixels. A file of another size than a fixed-size model takes is
  reported and skipped; a model that declares no input size (fully convolutional) protects any size natively.
  Tiling is not offered: a tile's label is not the image's, so a per-tile protection would answer another
  question.

Files are batched by size, in sorted order, and each batch is seeded from the position of its first file (with
`randomness=per_sample`, each file draws from a stream seeded by its own position, and the batch size no longer
matters), so a rerun, a resumed run or a run over a copy of the folder gives identical files. A rerun skips every
file whose output and manifest line match its settings and its input (`--force` redoes them); a corrupt file is
reported, recorded and skipped; outputs are written atomically after their manifest line.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf, open_dict
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn
from tqdm import tqdm

from preempt.assembly import Assembly
from preempt.config import CONF_DIR
from preempt.files import FolderInUseError, links_inside, lock_folder, release_folder, write_inside
from preempt.fingerprint import digest
from preempt.parts import ConfigError, LabelOnly, held_models
from preempt.parts.constraints import Positive
from preempt.protection.manifest import ManifestWriter, differences, protection_settings, read_manifest
from preempt.protection.memory import SSIM_NOT_MEASURED, SSIM_SMALLEST_SIDE, FileLimits, structural_similarity
from preempt.protection.photos import (
    SUFFIXES,
    Photo,
    UnreadableImageError,
    decode_png,
    encode_png,
    file_sha256,
    read_photo,
    sha256,
    shown_size,
)
from preempt.randomness import per_sample_streams, seed_batch
from preempt.results.provenance import git_commit, library_versions
from preempt.speed import accelerate, device_name, keep_freed_memory
from preempt.threat import LEVELS, quantize_within_budget
from preempt.validation import option_name, read_section, validate_config

MAX_LISTED = 5  # a refusal names this many conflicting files, then a count
MAX_REPORTED = 20  # the summary names this many failed files, then a count
# A disk that is full, over quota, read-only or gone: the run stops with one line, keeping what it finished.
WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


class ProtectSettings(BaseModel):
    """The `protect` node of conf/protect.yaml."""

    model_config = ConfigDict(extra="forbid")
    resize: Literal["model", "none"]
    max_batch_megapixels: Positive
    max_megapixels: Positive | None  # larger files are refused; None: only the memory estimate limits them
    device: str


class AtModelResolution(nn.Module):
    """A model on images of any size: resized to its input size first (differentiably); untouched at that size."""

    def __init__(self, model: nn.Module, size: tuple[int, int]) -> None:
        super().__init__()
        self.model = model
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", antialias=True, align_corners=False)
        return self.model(x)


@dataclass
class InputFile:
    relative: str  # POSIX path under INPUT_DIR: the manifest's key
    source: Path
    output: str  # POSIX path under OUTPUT_DIR
    position: int  # in the sorted listing; a batch is seeded from its first file's
    sha256: str
    todo: bool = True
    error: str | None = None
    size: tuple[int, int] | None = None  # (width, height) as shown
    retry: bool = False  # refused for its size or the memory free: the next run tries again (either may change)


@dataclass
class Summary:
    protected: list[str] = field(default_factory=list)
    done_before: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)  # what is under INPUT_DIR and not read, with why

    def report(self, output_dir: Path) -> str:
        lines = [
            f"protected {len(self.protected)} file(s); {len(self.done_before)} already done with these settings; "
            f"{len(self.failed)} failed; {len(self.ignored)} not read"
        ]
        for verb, named, more in (
            ("failed", self.failed, "failed (status `failed` in the manifest)"),
            ("not read", self.ignored, "not read"),
        ):
            items = list(named.items())
            lines += [f"  {verb}: {name}: {reason}" for name, reason in items[:MAX_REPORTED]]
            if len(items) > MAX_REPORTED:
                lines.append(f"  and {len(items) - MAX_REPORTED} more {more}")
        lines.append(f"outputs and manifest: {output_dir} (check them: preempt verify {output_dir})")
        return "\n".join(lines)


def check_folders(input_dir: Path, output_dir: Path) -> None:
    if not input_dir.is_dir():
        raise ConfigError(f"INPUT_DIR {input_dir} is not a folder: give the folder of images to protect")
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"OUTPUT_DIR {output_dir} is a file, not a folder: give a folder (new or a previous run's)")
    inside, outside = input_dir.resolve(), output_dir.resolve()
    if outside == inside or inside in outside.parents or outside in inside.parents:
        raise ConfigError(
            f"OUTPUT_DIR {output_dir} overlaps INPUT_DIR {input_dir}: outputs would be read as inputs on the next "
            f"run; pick an OUTPUT_DIR outside it"
        )


def claim_output_dir(output_dir: Path) -> None:
    """Creates OUTPUT_DIR if needed and takes its lock for this run, before any model is built: a folder that
    cannot be written, that another run is writing, or that holds a link (a file written through it would land
    elsewhere) is refused here, naming it."""
    try:
        lock_folder(output_dir, "preempt protect")
    except FolderInUseError as error:
        raise ConfigError(f"OUTPUT_DIR {error}") from None
    except OSError as error:
        raise ConfigError(
            f"OUTPUT_DIR {output_dir} cannot be written ({error.strerror}): pick a folder you can write, or fix its "
            f"permissions"
        ) from None
    links = links_inside(output_dir)
    if links:
        release_folder(output_dir)
        listed = ", ".join(str(link) for link in links[:MAX_LISTED])
        more = f" and {len(links) - MAX_LISTED} more" if len(links) > MAX_LISTED else ""
        raise ConfigError(
            f"OUTPUT_DIR {output_dir} holds symbolic links ({listed}{more}): protect never writes through a link, "
            f"which could put files and manifest lines outside OUTPUT_DIR; remove them or pick another OUTPUT_DIR"
        )


def list_inputs(input_dir: Path) -> tuple[list[InputFile], dict[str, str]]:
    """Image files under `input_dir` in sorted order, and what else is there with why it is not read (hidden
    files and folders are passed over: they are tools' bookkeeping, not photos). Links to files are read; links to
    folders are not followed (a loop, or a folder elsewhere pulled in by accident), and links to nothing are named."""
    found, ignored = [], {}
    for parent, folders, files in os.walk(input_dir):
        folders[:] = [name for name in folders if not name.startswith(".")]
        for name in folders:
            if os.path.islink(os.path.join(parent, name)):
                relative = Path(parent, name).relative_to(input_dir).as_posix()
                ignored[relative] = "a link to a folder, not followed: protect that folder by its own path"
        for name in files:
            path = Path(parent, name)
            relative = path.relative_to(input_dir).as_posix()
            if name.startswith("."):
                continue
            if not path.exists():
                ignored[relative] = "a link to nothing (its target is gone)"
            elif not path.is_file():
                ignored[relative] = "not a regular file"
            elif path.suffix.lower() not in SUFFIXES:
                ignored[relative] = f"not {', '.join(SUFFIXES)}"
            else:
                found.append((path, relative))
    images: list[InputFile] = []
    for path, relative in sorted(found):  # by path, part by part, as every earlier run ordered (and seeded) them
        output = Path(relative).with_suffix(".png").as_posix()
        images.append(InputFile(relative, path, output, len(images), file_sha256(path)))
    by_output: dict[str, list[str]] = {}
    for image in images:
        by_output.setdefault(image.output, []).append(image.relative)
    clashes = [names for names in by_output.values() if len(names) > 1]
    if clashes:
        raise ConfigError(
            f"{' and '.join(clashes[0])} would both be written as {Path(clashes[0][0]).with_suffix('.png').as_posix()}"
            f" ({len(clashes)} such clash(es)): rename one of each, or protect them from separate folders"
        )
    return images, dict(sorted(ignored.items()))


def plan(images: list[InputFile], output_dir: Path, settings: dict, force: bool) -> Summary:
    """Mark what a previous run finished (skipped) or failed on unchanged (reported again), and refuse to
    overwrite anything this command did not write or wrote with other settings, unless `force`."""
    summary = Summary()
    manifest = read_manifest(output_dir)
    key = digest(settings)
    conflicts, resettled = [], []
    for image in images:
        entry, output = manifest.get(image.relative), output_dir / image.output
        if force:
            continue
        if entry is None:
            if output.exists():
                conflicts.append(f"{output} exists and is not in its manifest (not written by preempt protect)")
            continue
        if entry.get("settings_sha256") != key:
            resettled.append((image.relative, differences(entry.get("settings", {}), settings)))
            continue
        if entry["input_sha256"] != image.sha256:
            continue  # the original changed since: protect it again
        if entry["status"] == "failed" and entry.get("retry"):
            continue  # refused for its size or the memory then free: tried again
        if entry["status"] == "failed":
            image.todo, image.error = False, entry["error"]
            summary.failed[image.relative] = f"{entry['error']} (unchanged since the last run)"
        elif output.is_file() and file_sha256(output) == entry["output_sha256"]:
            image.todo = False
            summary.done_before.append(image.relative)
        elif output.exists():
            conflicts.append(f"{output} was changed after preempt protect wrote it")
    if resettled:
        first, changed = resettled[0]
        conflicts.insert(
            0, f"{len(resettled)} file(s) were protected with other settings (first {first}: {'; '.join(changed)})"
        )
    if conflicts:
        listed = "\n  ".join(conflicts[:MAX_LISTED])
        more = f"\n  and {len(conflicts) - MAX_LISTED} more" if len(conflicts) > MAX_LISTED else ""
        raise ConfigError(
            f"OUTPUT_DIR {output_dir} holds files this run would overwrite:\n  {listed}{more}\n"
            f"use another OUTPUT_DIR, or --force to protect these files again with the present settings"
        )
    return summary


def batches(
    images: list[InputFile],
    model_size: tuple[int, int] | None,
    resize: str,
    batch_size: int,
    max_megapixels: float,
    limits: FileLimits | None = None,
) -> list[list[InputFile]]:
    """Files of one shown size together, in sorted order; each batch holds at most `batch_size` files and
    `max_megapixels` of pixels (at least one file). Unreadable files, with resize=none files of another size
    than the model's, and files `limits` refuses (over protect.max_megapixels, or a batch whose estimated memory
    is more than is available: `preempt.protection.memory`) get their error instead, from their header alone."""
    groups: dict[tuple[int, int], list[InputFile]] = {}
    for image in images:  # files that failed before keep their place, so every batch is cut as in the first run
        try:
            image.size = shown_size(image.source)
        except UnreadableImageError as error:
            image.error = str(error)
            continue
        if resize == "none" and model_size is not None and image.size[::-1] != model_size:
            image.error = (
                f"{image.size[0]}x{image.size[1]} (WxH), and the models take {model_size[1]}x{model_size[0]}: "
                f"protect.resize=model protects it at its own size through a resize to the model's"
            )
            continue
        if limits is not None and (refusal := limits.too_many_megapixels(image.source.name, image.size)):
            image.error, image.retry = refusal, True
            continue
        groups.setdefault(image.size, []).append(image)
    planned = []
    for (width, height), group in groups.items():
        per_batch = max(1, min(batch_size, math.floor(max_megapixels * 1e6 / (width * height))))
        planned += [group[start : start + per_batch] for start in range(0, len(group), per_batch)]
    if limits is not None:  # a batch is protected whole or not at all
        for batch in planned:
            for image in batch:
                image.error = limits.too_large(image.source.name, image.size, len(batch))
                image.retry = image.error is not None
        planned = [batch for batch in planned if batch[0].error is None]
    return sorted(planned, key=lambda batch: batch[0].position)


def model_input_size(models: dict[str, nn.Module]) -> tuple[int, tuple[int, int] | None]:
    """The channels and (H, W) the classifier and backbone take; they must agree."""
    shapes = {role: getattr(model, "input_shape", None) for role, model in models.items()}
    known = {shape for shape in shapes.values() if shape is not None}
    if len(known) > 1:
        raise ConfigError(
            f"the classifier takes {shapes['classifier']} images and the backbone {shapes['backbone']} (C, H, W): "
            f"protect needs both for one image size; pick models of one input shape"
        )
    if not known:
        return 3, None
    channels, height, width = known.pop()
    return channels, (height, width)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"protect.device={name} is not a device: use auto, cpu, cuda or cuda:<index>") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"protect.device={name} needs a CUDA GPU and none is visible: set protect.device=auto or cpu")
    return device


def refuse_label_only_classifier(container: dict) -> None:
    target = get_object(container["classifier"]["_target_"])
    if isinstance(target, type) and issubclass(target, LabelOnly):
        raise ConfigError(
            f"classifier={option_name(container, 'classifier')} labels from a dataset's true labels, and the "
            f"sender's files have none: protect labels each image with a model's prediction; pick a classifier model"
        )


def label_log_probability(model: nn.Module, x: Tensor, labels: Tensor) -> Tensor:
    """log p(label | x): its exponent is the confidence, its negative the loss the defense lowers (kept apart
    because a confident model's p rounds to 1.0 where −log p still shows the change)."""
    with torch.no_grad():
        return model(x).log_softmax(dim=1).gather(1, labels[:, None]).squeeze(1)


class Protector:
    """The composed parts bound to their models, and the folder's manifest: protects and records batches."""

    def __init__(
        self, cfg: DictConfig, protect: ProtectSettings, settings: dict, input_dir: Path, output_dir: Path
    ) -> None:
        assembly = Assembly(cfg)
        self.device = resolve_device(protect.device)
        models = assembly.models(roles=("classifier", "backbone"))
        self.channels, self.model_size = model_input_size(models)
        at_size = {
            role: AtModelResolution(model, self.model_size) if protect.resize == "model" and self.model_size else model
            for role, model in models.items()
        }
        self.classifier = at_size["classifier"].to(self.device)
        self.backbone = at_size["backbone"].to(self.device)
        passes = accelerate(self.backbone, assembly.config["speed"])
        self.defense = assembly.defense(models["backbone"], passes)
        for model in held_models(self.defense, "defense").values():  # A5's robustifier, trained on the CPU
            model.to(self.device)
        self.budget = settings["budget"]
        self.seed = cfg.seed
        self.per_sample = cfg.randomness == "per_sample"
        self.settings = settings
        self.settings_sha256 = digest(settings)
        # Where and with what a file was made: recorded for audit, not part of the settings a rerun compares.
        self.software = {"device": device_name(), "versions": library_versions(), "git": git_commit(CONF_DIR.parent)}
        self.input_dir = input_dir.resolve()
        self.output_dir = output_dir

    def run(self, batch: list[InputFile], manifest: ManifestWriter, summary: Summary) -> int:
        """Protect one batch (all of it, so the draws match an uninterrupted run) and write its unfinished files;
        returns how many unfinished files it handled."""
        handled = sum(image.todo for image in batch)
        started = time.perf_counter()
        photos: list[tuple[InputFile, Photo]] = []
        for image in batch:
            try:
                photos.append((image, read_photo(image.source, self.channels)))
            except UnreadableImageError as error:
                image.error = str(error)
                if image.todo:
                    self.record_failure(image, manifest, summary)
        if not photos:
            return handled
        seed_batch(self.seed, batch[0].position)
        x = torch.stack([photo.pixels for _, photo in photos]).to(self.device)
        positions = torch.tensor([image.position for image, _ in photos], device=self.device)
        streams = per_sample_streams(self.seed, positions) if self.per_sample else contextlib.nullcontext()
        with torch.no_grad():
            labels = self.classifier(x).argmax(dim=1)
        before = label_log_probability(self.backbone, x, labels)
        with torch.enable_grad():
            self.defense.prepare(x)
        protect_started = time.perf_counter()
        with torch.enable_grad(), streams:
            protected = self.defense(x, labels).detach()
        protect_seconds = time.perf_counter() - protect_started
        finite = protected.flatten(1).isfinite().all(dim=1)
        if not finite.all():  # those files fail; the others are measured in the same batch as always
            protected = torch.where(finite.view(-1, *[1] * (x.dim() - 1)), protected, x)
        eps, norm = (self.budget["eps"], self.budget["norm"]) if self.budget else (None, "Linf")
        quantized = quantize_within_budget(protected, x, eps, norm)
        del protected  # a photo's tensors are hundreds of MB: hold no more of them than the next step needs
        files = [encode_png(q, photo.alpha, photo.icc_profile) for q, (_, photo) in zip(quantized, photos, strict=True)]
        del quantized
        sent = torch.stack([decode_png(data, self.channels) for data in files]).to(self.device)
        after = label_log_probability(self.backbone, sent, labels)
        linf_levels = torch.round((sent - x).abs().flatten(1).amax(dim=1) * LEVELS)
        measurable = min(x.shape[-2:]) >= SSIM_SMALLEST_SIDE
        ssim = structural_similarity(sent, x) if measurable else None
        seconds = (time.perf_counter() - started) / len(photos)
        for i, ((image, photo), data) in enumerate(zip(photos, files, strict=True)):
            if not image.todo:
                continue
            if not finite[i]:
                image.error = (
                    "the protection is not finite (NaN/inf): the defense diverged on this file, so it is not written; "
                    "check the backbone's output on it, or protect it with another defense or backbone"
                )
                self.record_failure(image, manifest, summary)
                continue
            similarity = (
                {"ssim": round(float(ssim[i]), 6)} if measurable else {"ssim": None, "ssim_note": SSIM_NOT_MEASURED}
            )
            entry = {
                "status": "protected",
                "output_sha256": sha256(data),
                "size": list(image.size),
                "conversion": photo.conversion,
                "label": int(labels[i]),
                "confidence_before": round(float(before[i].exp()), 6),
                "confidence_after": round(float(after[i].exp()), 6),
                "loss_before": float(f"{max(0.0, -float(before[i])):.4g}"),
                "loss_after": float(f"{max(0.0, -float(after[i])):.4g}"),
                "linf": round(float(linf_levels[i]) / LEVELS, 6),
                "linf_levels": int(linf_levels[i]),
                **similarity,
                "seconds": round(seconds, 4),
                "protect_seconds": round(protect_seconds / len(photos), 4),
            }
            manifest.append(self.entry(image, **entry))
            write_inside(self.output_dir, image.output, data)
            summary.protected.append(image.relative)
        return handled

    def entry(self, image: InputFile, **fields: object) -> dict:
        return {
            "input": image.relative,
            "output": image.output,
            "input_dir": str(self.input_dir),
            "input_sha256": image.sha256,
            "channels": self.channels,
            **fields,
            "settings_sha256": self.settings_sha256,
            "settings": self.settings,
            "software": self.software,
        }

    def record_failure(self, image: InputFile, manifest: ManifestWriter, summary: Summary) -> None:
        manifest.append(
            self.entry(image, status="failed", error=image.error, **({"retry": True} if image.retry else {}))
        )
        summary.failed[image.relative] = image.error or ""


def protect_folder(
    cfg: DictConfig, input_dir: Path, output_dir: Path, force: bool = False, progress: bool = True
) -> Summary:
    """Protect every image under `input_dir` into `output_dir`; everything is checked before any model is built,
    and OUTPUT_DIR is this run's alone until it returns."""
    with open_dict(cfg):
        protect = read_section(ProtectSettings, dict(cfg.pop("protect")), "protect")
    for warning in validate_config(cfg, scoring=False):
        print(f"warning: {warning}", file=sys.stderr)
    check_folders(input_dir, output_dir)
    container = OmegaConf.to_container(cfg, resolve=True)
    refuse_label_only_classifier(container)
    resolve_device(protect.device)
    choices = dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else {}
    settings = protection_settings(container, choices, protect.model_dump())
    images, ignored = list_inputs(input_dir)
    if not images:
        found = "; ".join(f"{name}: {reason}" for name, reason in list(ignored.items())[:MAX_LISTED])
        raise ConfigError(
            f"INPUT_DIR {input_dir} holds no {', '.join(SUFFIXES)} files" + (f" ({found})" if found else "")
        )
    claim_output_dir(output_dir)
    try:
        summary = plan(images, output_dir, settings, force)
        summary.ignored = ignored
        pending = [image for image in images if image.todo]
        if pending:
            protect_pending(cfg, protect, settings, input_dir, output_dir, images, pending, summary, progress)
    finally:
        release_folder(output_dir)
    return summary


def protect_pending(
    cfg: DictConfig,
    protect: ProtectSettings,
    settings: dict,
    input_dir: Path,
    output_dir: Path,
    images: list[InputFile],
    pending: list[InputFile],
    summary: Summary,
    progress: bool,
) -> None:
    """Build the models once and protect the files `plan` left to do, batch by batch. A disk that fills up or
    becomes read-only mid-run stops it with one line: every file finished before has its manifest line and is
    kept, and a rerun goes on from there."""
    if cfg.speed.keep_freed_memory:
        keep_freed_memory()
    protector = Protector(cfg, protect, settings, input_dir, output_dir)
    limits = FileLimits.measure(protector.defense, protector.device, protector.channels, protect.max_megapixels)
    planned = batches(
        images, protector.model_size, protect.resize, cfg.batch_size, protect.max_batch_megapixels, limits
    )
    manifest = ManifestWriter(output_dir)
    try:
        for image in pending:
            if image.error is not None:  # unreadable header, a size resize=none cannot take, or too large
                protector.record_failure(image, manifest, summary)
        remove_unfinished_writes(output_dir, pending)
        total = sum(image.error is None for image in pending)
        with tqdm(total=total, unit="img", desc="protect", disable=not progress) as bar:
            for batch in planned:
                if any(image.todo for image in batch):
                    bar.update(protector.run(batch, manifest, summary))
    except OSError as error:
        if error.errno not in WRITE_ERRORS:
            raise
        raise ConfigError(
            f"writing OUTPUT_DIR {output_dir} failed ({error.strerror}{f': {error.filename}' if error.filename else ''}"
            f") after {len(summary.protected)} file(s) were protected; they are kept with their manifest lines: free "
            f"space or fix the folder, then run the same command again to go on"
        ) from None
    finally:
        manifest.close()


def remove_unfinished_writes(output_dir: Path, pending: list[InputFile]) -> None:
    """Temporary files a killed run left beside the outputs it was writing (`files.replace_atomically`)."""
    for image in pending:
        output = output_dir / image.output
        for leftover in output.parent.glob(f".{output.name}.*.tmp"):
            leftover.unlink()
