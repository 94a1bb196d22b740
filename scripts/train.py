"""Train one configuration: python scripts/train.py [group=option ...] [key=value ...]

Groups and options: python scripts/train.py --help
"""

import gc

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import initlab  # noqa: F401  (registers the configs' resolvers: ${project_root:}, ...)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    # imported here, not at the top: --help and a config Hydra rejects need no Lightning (~4 s)
    from initlab.console import use_job_logging
    from initlab.train import run

    use_job_logging()

    # a multirun goes on past a crashed job (its result.json says failed); one run raises
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    score = run(cfg, keep_going=multirun)
    if not multirun:  # the process ends here: its last collection need not walk the libraries
        gc.freeze()
    return score


if __name__ == "__main__":
    main()
