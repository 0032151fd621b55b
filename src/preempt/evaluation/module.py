"""The test loop: label -> protect (timed) -> score -> revert -> attack the victim -> score."""

from __future__ import annotations

import contextlib
import logging
import time

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import MaxMetric, MeanMetric, SumMetric
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.image import StructuralSimilarityIndexMeasure

from preempt.attacks.adaptive import AdaptiveAttack
from preempt.attacks.base import Attack, IterativeAttack, NoAttack, attack_succeeded, random_targets
from preempt.evaluation.metrics import RoundCurves, StepCurves, converged_step
from preempt.evaluation.protection_cache import ProtectionCache
from preempt.evaluation.sanity import FLAG_ADVICE, FLAGS, refuse_non_finite_images, sanity_flags
from preempt.parts import Defense, Identity, InputTransform, LabelOnly, NoReversion, Reversion, assign_labels, revert
from preempt.parts.part import held_models
from preempt.randomness import per_sample_streams, seed_batch
from preempt.receiver_defenses import receiver_model
from preempt.receiver_defenses.base import output_change, output_variance
from preempt.speed import timed
from preempt.threat import distance, to_8bit

log = logging.getLogger(__name__)


class PreemptiveEvaluation(L.LightningModule):
    """Scores a sender-side defense against a man-in-the-middle attack on the receiver's victim model.

    Every part comes bound to its models (`preempt.assembly`): the defense to the backbone, the attack to the model
    it attacks (victim∘g, or the bare victim for an oblivious attacker). A `receiver_defense` g wraps the victim
    once as victim∘g: every accuracy is the receiver's. Every model a part holds is registered here, so Lightning
    moves it with the module.
    Each batch is seeded from the run seed and its first sample index, so random starts do not depend on
    batch order or on how many processes share the work; with `per_sample_randomness` the defense's and the
    attack's random starts and the targets come from each sample's own stream (`preempt.randomness`), so they
    do not depend on the batch size either. With `transmit_8bit` the protected images are sent
    as 8-bit pixels (as a saved PNG would carry them): the main metrics score what is sent, and the
    `*_float` metrics score the unrounded protection under the same attack.
    A targeted attack gets a target per image drawn among the wrong classes (seeded with the batch), and
    `attack_success_rate` counts the target predicted; untargeted, any misclassification. On its first batch
    each process runs AutoAttack's sanity checks on the model the attack differentiates (`check_*` flags).
    An iterative attack with `record_every` adds its accuracy and success rate per round (`rounds`). A defense
    that keeps its iterates (Fast Preemption's `record_every`) has each scored as its output is, clean and after
    the run's attack (`steps`, Figure 8's curve); its protections are then computed, never taken from the cache.
    A `reversion` runs between protection and attack: the attack starts from its guess of the original images and
    stays within the budget around the protected images the man in the middle received (`Attack.perturb_from`).
    The victim's accuracy on the guesses is `reverted_clean_acc` (the protocol's verdict reads it).
    Every stage is timed per image (`label_`, `defense_`, `reversion_`, `attack_`, `score_seconds_per_image`), so a
    run's slowest stage shows in its results.
    Protected, reverted and adversarial images with NaN or inf pixels stop the run (`sanity.refuse_non_finite_images`,
    before a protection is cached); a run that finishes records the check as the flag `check_non_finite_images`.
    """

    def __init__(
        self,
        classifier: nn.Module | LabelOnly,
        victim: nn.Module,
        defense: Defense,
        attack: Attack,
        num_classes: int,
        seed: int = 0,
        transmit_8bit: bool = False,
        receiver_defense: InputTransform | None = None,
        reversion: Reversion | InputTransform | None = None,
        per_sample_randomness: bool = False,
        protection_cache: ProtectionCache | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(victim, nn.Module) or isinstance(victim, LabelOnly):
            raise TypeError(
                f"the victim must be a model config, not {type(victim).__name__}; "
                f"label-only models (ground_truth, noisy_labels) can only be the classifier"
            )
        self.classifier = classifier
        self.victim = victim
        self.defense = defense
        self.reversion = reversion if reversion is not None else NoReversion()
        self.reverting = not isinstance(self.reversion, NoReversion)
        self.receiver_defense = receiver_defense if receiver_defense is not None else Identity()
        self.receiver = receiver_model(victim, self.receiver_defense)
        self.attack = attack
        for role in ("defense", "attack", "receiver_defense", "reversion"):
            for name, model in held_models(getattr(self, role), role).items():
                self.add_module(name, model)
        self.seed = seed
        self.per_sample_randomness = per_sample_randomness
        self.protection_cache = protection_cache
        self.transmit_8bit = transmit_8bit
        self.num_classes = num_classes

        def accuracy() -> MulticlassAccuracy:
            return MulticlassAccuracy(num_classes=num_classes, average="micro")

        self.classifier_acc = accuracy()
        self.clean_acc = accuracy()
        self.protected_clean_acc = accuracy()
        self.robust_acc = accuracy()
        if transmit_8bit:
            self.protected_clean_acc_float = accuracy()
            self.robust_acc_float = accuracy()
        self.ssim = StructuralSimilarityIndexMeasure(data_range=1.0)
        self.label_seconds_per_image = MeanMetric()
        self.defense_seconds_per_image = MeanMetric()
        self.protection_cache_hit = MeanMetric()  # the share of images whose protection came from the cache
        self.attack_seconds_per_image = MeanMetric()
        self.score_seconds_per_image = MeanMetric()  # every prediction and metric update of the batch
        self.receiver_seconds_per_image = MeanMetric()  # g and the victim on clean images: the receiver's cost
        self.linf = MaxMetric()
        self.attack_distance = MaxMetric()
        self.receiver_variance_l2 = MeanMetric()
        self.receiver_variance_ssim = MeanMetric()
        self.receiver_change_rms = MeanMetric()
        self.receiver_change_ssim = MeanMetric()
        learned = isinstance(attack, AdaptiveAttack) and attack.approximation == "learned"
        self.approximating = learned and attack.approximator is not None
        if self.approximating:
            self.approximation_rms = MeanMetric()
            self.approximation_ssim = MeanMetric()
        if self.reverting:
            self.reverted_clean_acc = accuracy()
            self.reversion_seconds_per_image = MeanMetric()
            self.protected_l2_to_original = MeanMetric()
            self.reverted_l2_to_original = MeanMetric()
            self.reversion_fixed = SumMetric()  # images the victim gets right after reversion, wrong before
            self.reversion_broke = SumMetric()  # and the other way round: McNemar's discordant pairs
        self.check_non_finite_images = MaxMetric()
        self.attacked = not isinstance(self.attack, NoAttack)
        if self.attacked:
            self.attack_success_rate = MeanMetric()
            for flag in FLAGS:
                setattr(self, f"check_{flag}", MaxMetric())
        recorded = self.attack.recorded_rounds if isinstance(self.attack, IterativeAttack) else ()
        self.round_curves = RoundCurves(recorded) if recorded else None
        self.rounds: dict[str, list] | None = None
        self.attack_rounds = MeanMetric()  # the rounds each image ran, when the attack says (`until_bound`)
        kept_steps = getattr(self.defense, "recorded_steps", ())
        self.step_curves = StepCurves(kept_steps) if kept_steps else None
        self.steps: dict[str, list] | None = None
        self.checked = self.square_reported = False

    def labels(self, x: Tensor, y: Tensor, index: Tensor) -> Tensor:
        """The sender's labels: the classifier's predictions, or a label-only model's (ground truth, noisy)."""
        return assign_labels(self.classifier, x, y, index, self.num_classes)

    def protect(self, x: Tensor, labels: Tensor) -> tuple[Tensor, float]:
        """Protected images and the wall-clock seconds the defense took (its one-off preparation apart)."""
        with torch.enable_grad():
            self.defense.prepare(x)
            protected, seconds = timed(x, lambda: self.defense(x, labels))
        return protected.detach(), seconds

    def protect_or_reuse(self, x: Tensor, labels: Tensor, index: Tensor) -> tuple[Tensor, float, bool]:
        """The batch's protection from the cache when an identical run made it (with the seconds it took then, and
        the random generators where that run left them), else computed now and cached. A defense that keeps its
        iterates always computes (the cache holds no iterates). A protection with NaN or inf pixels stops the run
        before it is cached, so a run after the fix does not reuse it."""
        caching = self.protection_cache is not None and self.step_curves is None
        first_index, size = int(index[0]), len(index)
        cached = self.protection_cache.load(first_index, size, labels) if caching else None
        protected, seconds = cached if cached is not None else self.protect(x, labels)
        refuse_non_finite_images("protected", protected, index)
        if caching and cached is None:
            self.protection_cache.save(first_index, size, labels, protected, seconds)
        return protected, seconds, cached is not None

    def predict(self, x: Tensor) -> Tensor:
        """The receiver's decision: the victim's on g(x) when a receiver-side defense is set."""
        with torch.no_grad():
            return self.receiver(x).argmax(dim=1)

    def test_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> None:
        x, y, index = batch
        seed_batch(self.seed, int(index[0]))
        streams = per_sample_streams(self.seed, index) if self.per_sample_randomness else contextlib.nullcontext()
        with streams:
            self.score_batch(x, y, index)

    def score_batch(self, x: Tensor, y: Tensor, index: Tensor) -> None:
        batch_size = len(x)

        labels, label_seconds = timed(x, lambda: self.labels(x, y, index))
        protected, seconds, cache_hit = self.protect_or_reuse(x, labels, index)
        sent = to_8bit(protected) if self.transmit_8bit else protected
        target = random_targets(y, self.num_classes) if self.attack.targeted else None
        reverted, reversion_seconds = timed(x, lambda: revert(self.reversion, sent, y, index))
        start = reverted if self.reverting else None
        if self.reverting:
            refuse_non_finite_images("reverted", reverted, index)
        adversarial, attack_seconds = timed(x, lambda: self.run_attack(sent, y, target, start=start))
        refuse_non_finite_images("adversarial", adversarial, index)
        self.check_non_finite_images.update(0.0)  # reached with every image finite
        if self.round_curves is not None:
            self.round_curves.update(self.attack.record)
        rounds_run = getattr(self.attack, "rounds_run", None)
        if rounds_run is not None:
            self.attack_rounds.update(rounds_run.float())
            self.log("test/attack_rounds", self.attack_rounds, on_step=False, on_epoch=True, batch_size=batch_size)

        score_started = time.perf_counter()
        self.classifier_acc(labels, y)
        clean_predictions, receiver_seconds = timed(x, lambda: self.predict(x))
        self.clean_acc(clean_predictions, y)
        protected_predictions = self.predict(sent)
        self.protected_clean_acc(protected_predictions, y)
        robust_predictions = self.predict(adversarial)
        self.robust_acc(robust_predictions, y)
        self.ssim(sent, x)
        for metric, stage_seconds in (
            (self.label_seconds_per_image, label_seconds),
            (self.defense_seconds_per_image, seconds),
            (self.attack_seconds_per_image, attack_seconds),
            (self.receiver_seconds_per_image, receiver_seconds),
        ):
            metric.update(stage_seconds / batch_size, weight=batch_size)
        self.protection_cache_hit.update(float(cache_hit), weight=batch_size)
        self.linf(distance(sent, x, "Linf").max())
        self.attack_distance(distance(adversarial, sent, self.attack.norm).max())
        receiver_names = self.score_receiver(sent)
        names = [
            "classifier_acc",
            "clean_acc",
            "protected_clean_acc",
            "robust_acc",
            "ssim",
            "label_seconds_per_image",
            "defense_seconds_per_image",
            "protection_cache_hit",
            "attack_seconds_per_image",
            "score_seconds_per_image",
            "receiver_seconds_per_image",
            "linf",
            "attack_distance",
            "check_non_finite_images",
            *receiver_names,
        ]
        if self.reverting:
            names += self.score_reversion(x, y, sent, protected_predictions, reverted, reversion_seconds)
        if self.attacked:
            self.attack_success_rate.update(attack_succeeded(robust_predictions, y, target).float())
            names += ["attack_success_rate", *self.check_sanity(sent, y)]
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        score_seconds = time.perf_counter() - score_started
        self.score_seconds_per_image.update(score_seconds / batch_size, weight=batch_size)
        if self.transmit_8bit:  # the unrounded protection, attacked and scored again (not in the stage times)
            self.protected_clean_acc_float(self.predict(protected), y)
            reverted_float = revert(self.reversion, protected, y, index) if self.reverting else None
            self.robust_acc_float(self.predict(self.run_attack(protected, y, target, start=reverted_float)), y)
            names += ["protected_clean_acc_float", "robust_acc_float"]
        for name in names:
            self.log(f"test/{name}", getattr(self, name), on_step=False, on_epoch=True, batch_size=batch_size)
        if self.step_curves is not None:
            self.score_snapshots(y, index, target)

    def score_snapshots(self, y: Tensor, index: Tensor, target: Tensor | None) -> None:
        """Each iterate the defense kept, scored as its output is: sent (8-bit with `transmit_8bit`), reverted when
        a reversion runs, attacked by the run's attack. Last in the batch, so the run's own draws are unchanged."""
        clean, robust = [], []
        for _, iterate in self.defense.snapshots:
            sent = to_8bit(iterate) if self.transmit_8bit else iterate
            start = revert(self.reversion, sent, y, index) if self.reverting else None
            clean.append(self.predict(sent) == y)
            robust.append(self.predict(self.run_attack(sent, y, target, start=start)) == y)
        self.step_curves.update(torch.stack(clean), torch.stack(robust))

    def score_receiver(self, sent: Tensor) -> list[str]:
        """How much g changes the sent images (before any attack), the second paper's Table 1 both ways: one draw
        against its input, as its authors' code measures it (`receiver_change_*`), and two draws apart, as its
        text describes it (`receiver_variance_*`, sharing that draw); with a learned BPDA, how far g′ is from the
        same draw of g (`approximation_*`; the paper: 0.16 and 0.36). Returns the names of the metrics to log."""
        with torch.no_grad():
            received = self.receiver_defense.transform(sent)
            approximated = self.attack.approximator(sent) if self.approximating else None
        names = ["receiver_variance_l2", "receiver_variance_ssim", "receiver_change_rms", "receiver_change_ssim"]
        results = [*output_variance(self.receiver_defense, sent, first=received), *output_change(received, sent)]
        if approximated is not None:
            names += ["approximation_rms", "approximation_ssim"]
            results += output_change(approximated, received)
        for name, values in zip(names, results, strict=True):
            getattr(self, name).update(values)
        return names

    def score_reversion(
        self, x: Tensor, y: Tensor, sent: Tensor, protected_predictions: Tensor, reverted: Tensor, seconds: float
    ) -> list[str]:
        """The victim on the attacker's guesses, how far they are from the originals, and what it cost."""
        reverted_predictions = self.predict(reverted)
        self.reverted_clean_acc(reverted_predictions, y)
        reverted_correct, protected_correct = reverted_predictions == y, protected_predictions == y
        self.reversion_fixed.update((reverted_correct & ~protected_correct).sum())
        self.reversion_broke.update((protected_correct & ~reverted_correct).sum())
        self.protected_l2_to_original.update(distance(sent, x, "L2"))
        self.reverted_l2_to_original.update(distance(reverted, x, "L2"))
        self.reversion_seconds_per_image.update(seconds / len(x), weight=len(x))
        return [
            "reverted_clean_acc",
            "reversion_fixed",
            "reversion_broke",
            "protected_l2_to_original",
            "reverted_l2_to_original",
            "reversion_seconds_per_image",
        ]

    def run_attack(self, x: Tensor, y: Tensor, target: Tensor | None = None, start: Tensor | None = None) -> Tensor:
        """The attack on `x`, or after a reversion from its guess `start`, within the budget around `x`."""
        with torch.enable_grad():
            return self.attack(x, y, target, start=start).detach()

    def check_sanity(self, x: Tensor, y: Tensor) -> list[str]:
        """AutoAttack's checks on this process's first batch (each later batch only adds AutoAttack's own
        Square-versus-white-box report); returns the names of the flag metrics to log."""
        if not self.checked:
            self.checked = True
            for flag, fired in sanity_flags(self.attack.gradient_model, x, y).items():
                getattr(self, f"check_{flag}").update(float(fired))
                if fired:
                    log.warning("sanity check %s fired: %s", flag, FLAG_ADVICE[flag])
        beaten = bool(getattr(self.attack, "square_beat_white_box", False))
        if beaten and not self.square_reported:
            self.square_reported = True
            log.warning("sanity check square_beat_white_box fired: %s", FLAG_ADVICE["square_beat_white_box"])
        self.check_square_beat_white_box.update(float(beaten))
        return [f"check_{flag}" for flag in FLAGS]

    def on_test_epoch_end(self) -> None:
        """The per-step and per-round curves, reduced over processes (every process must take part), then logged as
        tables."""
        if self.step_curves is not None:
            self.steps = self.step_curves.compute()
            converged = converged_step(self.steps["step"], self.steps["robust_acc"])
            self.log("test/steps_to_converge", float(converged), sync_dist=False)
            step_rows = [list(row) for row in zip(*self.steps.values(), strict=True)]
            for logger in self.loggers:
                if hasattr(logger, "log_table"):
                    logger.log_table(key="test/steps", columns=list(self.steps), data=step_rows)
        if self.round_curves is None:
            return
        self.rounds = self.round_curves.compute()
        rows = [list(row) for row in zip(*self.rounds.values(), strict=True)]
        for logger in self.loggers:
            if hasattr(logger, "log_table"):
                logger.log_table(key="test/rounds", columns=list(self.rounds), data=rows)
