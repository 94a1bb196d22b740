"""Train one configuration: python scripts/train.py [group=option ...] [key=value ...]

Groups and options: python scripts/train.py --help
"""

import hydra
from omegaconf import DictConfig

from initlab.train import run


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    return run(cfg)


if __name__ == "__main__":
    main()
