"""Train one configuration: python scripts/train.py [group=option ...] [key=value ...]

Groups and options: python scripts/train.py --help
"""

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from initlab.train import run


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    # a multirun goes on past a crashed job (its result.json says failed); one run raises
    return run(cfg, keep_going=HydraConfig.get().mode == RunMode.MULTIRUN)


if __name__ == "__main__":
    main()
