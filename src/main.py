"""Entry point: `python src/main.py defense=fast_preemption attack=autoattack` (any Hydra override works)."""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from preempt.config import print_config_tree, register_resolvers
from preempt.files import exit_cleanly_on_sigterm
from preempt.run import evaluate, marked_if_failed, one_line_refusals

register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf", config_name="main")
def main(cfg: DictConfig) -> None:
    exit_cleanly_on_sigterm()
    if cfg.get("print_config", True):
        print_config_tree(cfg)
    with one_line_refusals(), marked_if_failed(Path(cfg.paths.output_dir)):
        evaluate(cfg)


if __name__ == "__main__":
    main()
