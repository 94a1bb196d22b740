"""What you configure is what trains: the optimizer state saved after training equals the config."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from initlab.train import ConfigError, build, run
from tests.helpers import CONF, matrix

OPTIMS = sorted(p.stem for p in (CONF / "optim").glob("*.yaml"))
SCHEDULERS = sorted(p.stem for p in (CONF / "scheduler").glob("*.yaml"))


def saved_param_groups(cfg) -> list[dict]:
    run(cfg)
    checkpoint = torch.load(f"{cfg.output_dir}/checkpoints/last.ckpt", weights_only=False)
    return checkpoint["optimizer_states"][0]["param_groups"]


def as_config_value(value):
    return list(value) if isinstance(value, tuple) else value


# fast: every optimizer under the default scheduler, every scheduler with momentum (what
# one-cycle could cycle)
@pytest.mark.parametrize(("optim", "scheduler"), matrix(
    OPTIMS, SCHEDULERS,
    fast={(optim, "onecycle") for optim in OPTIMS} | {("momentum", s) for s in SCHEDULERS}))
def test_optimizer_state_after_training_equals_the_config(make_cfg, optim, scheduler):
    cfg = make_cfg(f"optim={optim}", f"scheduler={scheduler}", "trainer.max_epochs=2",
                   "robustness=null", outputs=True)
    asked = {k: v for k, v in OmegaConf.to_container(cfg.optim).items()
             if not k.startswith("_") and k != "lr"}
    assert asked, "the optimizer config names its hyper-parameters"
    for group in saved_param_groups(cfg):
        in_effect = {k: as_config_value(group[k]) for k in asked}
        assert in_effect == asked, f"optim={optim} scheduler={scheduler}"
        if scheduler == "none":
            assert group["lr"] == cfg.optim.lr


def test_cycle_momentum_is_applied_only_when_asked(make_cfg):
    """scheduler.cycle_momentum=true cycles SGD's momentum between base and max (documented)."""
    cfg = make_cfg("optim=momentum", "scheduler=onecycle", "scheduler.cycle_momentum=true",
                   "trainer.max_epochs=2", "robustness=null", outputs=True)
    (group,) = saved_param_groups(cfg)
    assert group["momentum"] != cfg.optim.momentum
    assert cfg.scheduler.base_momentum <= group["momentum"] <= cfg.scheduler.max_momentum


def test_cycle_momentum_without_momentum_is_a_clear_error(make_cfg):
    with pytest.raises(ConfigError, match=r"scheduler.cycle_momentum=true needs an optimizer "
                                          r"with momentum or betas; Adagrad has neither"):
        build(make_cfg("optim=adagrad", "scheduler=onecycle", "scheduler.cycle_momentum=true"))
