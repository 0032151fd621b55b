"""Entry point: `python src/main.py defense=fast_preemption attack=autoattack` (any Hydra override works)."""

import hydra
from omegaconf import DictConfig

from preempt.config import register_resolvers
from preempt.files import exit_cleanly_on_sigterm
from preempt.run import evaluate, one_line_refusals

register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf", config_name="main")
def main(cfg: DictConfig) -> None:
    exit_cleanly_on_sigterm()
    with one_line_refusals():
        evaluate(cfg)


if __name__ == "__main__":
    main()
