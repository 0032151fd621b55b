"""Learn a defensive quantization table (Algorithm 2 of the preprocessing-defense paper).

`python -m preempt.commands.learn_quantization dataset=digits dataset.split=train victim=... attack=pgd`

Attacks the victim on the dataset's images, takes the 8×8 DCT of every block of every channel of the clean
and the adversarial images, and counts, per block, which frequency the attack changed most. The table is
those counts scaled to 20..100 (the most-changed frequency gets the largest step), written as a text file
that `receiver_defense.table=<file>` reads.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from preempt.assembly import bind
from preempt.commands.entry import hydra_command, task_overrides
from preempt.parts import ConfigError
from preempt.randomness import seed_batch
from preempt.receiver_defenses.dct import BLOCK, most_changed_frequency_counts, table_from_counts, write_table
from preempt.validation import check_models_fit_dataset, check_parts_fit_dataset, option_name, validate_config

log = logging.getLogger(__name__)


def learn_table(cfg: DictConfig) -> Path:
    with open_dict(cfg):
        table_file = Path(cfg.pop("table_file"))
    if table_file.exists():
        raise ConfigError(f"table_file={table_file} already exists: choose another file, or move that one away first")
    for warning in validate_config(cfg, scoring=False):
        log.warning(warning)
    config = OmegaConf.to_container(cfg, resolve=True)
    dataset = instantiate(cfg.dataset)
    check_parts_fit_dataset(config, dataset)
    victim = instantiate(cfg.victim)
    check_models_fit_dataset({"victim": victim}, dataset)
    attack = bind(instantiate(cfg.attack), {"model": victim})

    counts = torch.zeros(BLOCK, BLOCK, dtype=torch.long)
    unchanged = 0
    for start in range(0, len(dataset), cfg.batch_size):
        images = dataset.images[start : start + cfg.batch_size]
        labels = dataset.labels[start : start + cfg.batch_size]
        seed_batch(cfg.seed, int(dataset.indices[start]))
        with torch.enable_grad():
            adversarial = attack(images, labels).detach()
        batch_counts, batch_unchanged = most_changed_frequency_counts(images, adversarial)
        counts += batch_counts
        unchanged += batch_unchanged
    table = table_from_counts(counts)
    notes = [
        "Defensive quantization table (Algorithm 2 of the preprocessing-defense paper): steps 20..100 scaled from",
        "how often each DCT frequency was a block's most-changed one under the attack.",
        f"dataset {dataset.name}: {len(dataset)} images from index {int(dataset.indices[0])}",
        f"victim {option_name(config, 'victim')}; attack {option_name(config, 'attack')} "
        f"eps {cfg.threat.eps} {cfg.threat.norm}; seed {cfg.seed}",
        f"blocks counted {int(counts.sum())}, left unchanged by the attack {unchanged}",
        f"overrides: {' '.join(task_overrides()) or 'none'}",
    ]
    written = write_table(table_file, table, notes)
    usage = f"receiver_defense=dct_distortion receiver_defense.table={written}"
    print(f"\n{written.read_text()}\ntable: {written}\nuse it: {usage}")
    return written


@hydra_command("learn_quantization")
def main(cfg: DictConfig) -> None:
    learn_table(cfg)


if __name__ == "__main__":
    main()
