"""Entry point: `python src/main.py defense=fast_preemption attack=autoattack` (any Hydra override works)."""

import hydra
from omegaconf import DictConfig

from preempt.config import register_resolvers
from preempt.run import evaluate

register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf", config_name="main")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
