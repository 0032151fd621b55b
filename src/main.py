"""Entry point: `python src/main.py defense=fast_preemption attack=autoattack` (any Hydra override works)."""

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig

from preempt.config import register_resolvers
from preempt.evaluation.rank_failures import RankFailedError
from preempt.files import exit_cleanly_on_sigterm
from preempt.results import FinishedRunError
from preempt.run import evaluate
from preempt.validation import ConfigError

register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf", config_name="main")
def main(cfg: DictConfig) -> None:
    exit_cleanly_on_sigterm()
    try:
        evaluate(cfg)
    except InstantiationException as error:
        # Our loaders' errors name the file or key and the fix; Hydra's wrapper and traceback only hide that.
        if isinstance(error.__cause__, ValueError | OSError):
            raise SystemExit(f"error: {error.__cause__}") from None
        raise
    except (ConfigError, FinishedRunError, RankFailedError) as error:  # refusals; any other error keeps its traceback
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main()
