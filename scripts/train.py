"""Train one configuration: python scripts/train.py [group=option ...] [key=value ...]

Groups and options: python scripts/train.py --help
"""

import gc

# no collection passes while the libraries import (Lightning's chain allocates ~400k objects);
# main() turns the collector back on with them frozen out of it
gc.disable()

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

import initlab  # noqa: E402, F401  (registers the configs' resolvers: ${project_root:}, ...)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    # imported here, not at the top: --help and a config Hydra rejects need no Lightning (~4 s)
    from initlab.console import use_job_logging
    from initlab.train import run

    gc.freeze()  # what the imports made stays out of the collector's passes
    gc.enable()
    use_job_logging()

    # a multirun goes on past a crashed job (its result.json says failed); one run raises
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    score = run(cfg, keep_going=multirun)
    if not multirun:  # the process ends here: its last collection need not walk the libraries
        gc.freeze()
    return score


if __name__ == "__main__":
    main()
