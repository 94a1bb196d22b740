"""The config checked before anything is built: every key a user can set, the trainer's
included, and every folder a run must create or read.

The schemas are dataclasses, registered in Hydra's ConfigStore (group ``schema``); OmegaConf
checks each value's type against them. Its messages name the key and the value but not what
is allowed (``Value 'abc' of type 'str' could not be converted to Integer``), so each check
here raises :class:`ConfigError` as ``<key>=<value> is invalid: it must be <allowed>``, the
``allowed`` text written next to the field. Ranges and choices are the fields' ``ok``
predicates; unknown keys are listed with the allowed ones. The checks run on the config
resolved, before the data, the model or the trainer exist.
"""

from __future__ import annotations

import inspect
import os
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, get_args

from hydra.core.config_store import ConfigStore
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ValidationError


class ConfigError(ValueError):
    """A configuration value is invalid; raised before any training starts."""


def _key(default: Any, allowed: str, ok: Callable[[Any], bool] | None = None,
         choices: tuple | Callable[[], list] | None = None) -> Any:
    """A schema field: its default, what a value must be (for the message) and, beyond its
    type, the range (``ok``) or the values (``choices``, or a function listing them, called
    when checking) it may take."""
    return field(default=default, metadata={"allowed": allowed, "ok": ok, "choices": choices})


def _at_least(low: float) -> Callable[[Any], bool]:
    return lambda v: v is None or v >= low


def _above(low: float) -> Callable[[Any], bool]:
    return lambda v: v is None or v > low


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


MEMORY_FORMAT_SETTINGS = ("auto", True, False)
LR_FIND_MODES = ("exponential", "linear")


@dataclass
class StatusConfig:
    """``status``: the verdicts of initlab.status.RunStatus."""

    check_every_n_steps: int = _key(50, "an integer >= 1", _at_least(1))
    stall_accuracy: float = _key(0.2, "a number from 0 to 1", lambda v: 0 <= v <= 1)
    blowup_factor: Optional[float] = _key(  # noqa: UP045 (OmegaConf reads Optional, not |)
        100.0, "a number > 1 or null (only a non-finite loss counts as diverged)", _above(1))


@dataclass
class TuneConfig:
    """``tune`` (``+tune=lr_find``): Lightning's learning-rate range test."""

    min_lr: float = _key(1e-6, "a number > 0", _above(0))
    max_lr: float = _key(1.0, "a number > tune.min_lr", _above(0))
    num_training: int = _key(100, "an integer >= 1 (a suggestion needs at least 13 steps)",
                             _at_least(1))
    mode: str = _key("exponential", "exponential or linear", choices=LR_FIND_MODES)
    early_stop_threshold: Optional[float] = _key(  # noqa: UP045
        4.0, "a number > 1 or null (never stop early)", _above(1))
    apply: bool = _key(False, "true or false")


def _precisions() -> list:
    """The values Lightning's ``precision`` takes (the literals of its type)."""
    from lightning.fabric.connector import _PRECISION_INPUT

    def flatten(hint: Any) -> list:
        return [v for arg in get_args(hint) for v in (flatten(arg) if get_args(arg) else [arg])]

    return [None, *flatten(_PRECISION_INPUT)]


_FRACTION_OR_COUNT = "a fraction from 0 to 1 (of the batches), an integer count, or null"


def _fraction_or_count(value: Any) -> bool:
    return value is None or (_is_number(value) and value >= 0
                             and (isinstance(value, int) or value <= 1))


@dataclass
class TrainerConfig:
    """``trainer``: the arguments of ``lightning.Trainer`` a config may set (1:1, Lightning's
    defaults); ``callbacks``, ``logger``, ``plugins``, ``enable_checkpointing`` and
    ``default_root_dir`` are initlab's to set (the callbacks, logger and checkpoint groups,
    output_dir). Union-typed arguments are ``Any`` with their own check: OmegaConf 2.3 has no
    unions of scalars."""

    _target_: str = "lightning.Trainer"
    accelerator: str = _key("auto", "a string: auto, cpu, gpu, cuda, mps, tpu")
    strategy: str = _key("auto", "a string: auto, ddp, ddp_spawn, ...")
    devices: Any = _key("auto", "an integer, a list of device indices or a string ('auto', '-1')",
                        lambda v: isinstance(v, (str, list)) or (_is_number(v) and v == int(v)))
    num_nodes: int = _key(1, "an integer >= 1", _at_least(1))
    precision: Any = _key(None, "one of Lightning's precisions", choices=_precisions)
    fast_dev_run: Any = _key(False, "true, false or an integer >= 0",
                             lambda v: isinstance(v, bool) or (isinstance(v, int) and v >= 0))
    max_epochs: Optional[int] = _key(None, "an integer (-1: no limit) or null",  # noqa: UP045
                                     _at_least(-1))
    min_epochs: Optional[int] = _key(None, "an integer >= 0 or null", _at_least(0))  # noqa: UP045
    max_steps: int = _key(-1, "an integer (-1: no limit)", _at_least(-1))
    min_steps: Optional[int] = _key(None, "an integer >= 0 or null", _at_least(0))  # noqa: UP045
    max_time: Any = _key(None, "a duration 'DD:HH:MM:SS', a mapping such as {hours: 1}, or null",
                         lambda v: v is None or isinstance(v, (str, dict)))
    limit_train_batches: Any = _key(None, _FRACTION_OR_COUNT, _fraction_or_count)
    limit_val_batches: Any = _key(None, _FRACTION_OR_COUNT, _fraction_or_count)
    limit_test_batches: Any = _key(None, _FRACTION_OR_COUNT, _fraction_or_count)
    limit_predict_batches: Any = _key(None, _FRACTION_OR_COUNT, _fraction_or_count)
    overfit_batches: Any = _key(0.0, "a fraction from 0 to 1 or an integer count",
                                lambda v: v is not None and _fraction_or_count(v))
    val_check_interval: Any = _key(None, "a fraction of the epoch from 0 to 1, an integer count "
                                         "of batches, a duration string or null",
                                   lambda v: isinstance(v, str) or _fraction_or_count(v))
    check_val_every_n_epoch: Optional[int] = _key(1, "an integer >= 1 or null",  # noqa: UP045
                                                  _at_least(1))
    num_sanity_val_steps: Optional[int] = _key(None, "an integer (-1: all) or null",  # noqa: UP045
                                               _at_least(-1))
    log_every_n_steps: Optional[int] = _key(None, "an integer >= 0 or null",  # noqa: UP045
                                            _at_least(0))
    enable_progress_bar: Optional[bool] = _key(None, "true, false or null")  # noqa: UP045
    enable_model_summary: Optional[bool] = _key(None, "true, false or null")  # noqa: UP045
    accumulate_grad_batches: int = _key(1, "an integer >= 1", _at_least(1))
    gradient_clip_val: Optional[float] = _key(None, "a number >= 0 or null",  # noqa: UP045
                                              _at_least(0))
    gradient_clip_algorithm: Optional[str] = _key(None, "norm, value or null",  # noqa: UP045
                                                  choices=(None, "norm", "value"))
    deterministic: Any = _key(None, "true, false, 'warn' or null",
                              choices=(None, True, False, "warn"))
    benchmark: Optional[bool] = _key(None, "true, false or null")  # noqa: UP045
    inference_mode: bool = _key(True, "true or false")
    use_distributed_sampler: bool = _key(True, "true or false")
    profiler: Optional[str] = _key(None, "simple, advanced, pytorch, xla or null")  # noqa: UP045
    detect_anomaly: bool = _key(False, "true or false")
    barebones: bool = _key(False, "true or false")
    sync_batchnorm: bool = _key(False, "true or false")
    reload_dataloaders_every_n_epochs: int = _key(0, "an integer >= 0", _at_least(0))
    enable_autolog_hparams: bool = _key(True, "true or false")
    model_registry: Optional[str] = _key(None, "a string or null")  # noqa: UP045


@dataclass
class RunConfig:
    """The top level of ``conf/train.yaml``: the groups (checked by their own schema or by
    their ``_target_``'s signature) and the run's own settings."""

    data: Any = _key(None, "a data module config")
    model: Any = _key(None, "a model config")
    init: Any = _key(None, "an init config")
    optim: Any = _key(None, "an optimizer config")
    scheduler: Any = _key(None, "a scheduler config")
    trainer: Any = _key(None, "a trainer config")
    logger: Any = _key(None, "a logger config or null")
    callbacks: Any = _key(None, "a mapping of monitors")
    augment: Any = _key(None, "an augment config")
    checkpoint: Any = _key(None, "a mapping of checkpoint callbacks or null")
    progress_bar: Any = _key(None, "a progress bar config or null")
    status: Any = _key(None, "the status settings")
    tune: Any = _key(None, "the tune settings or null")
    pilots: Any = _key(None, "the learning-rate pilots' {lrs, steps} or null")
    budget: Optional[str] = _key(None, "Table 1's budget (set by budget=quick|cpu|paper) or null")  # noqa: UP045
    robustness: Any = _key(None, "a mapping of corruption kinds to levels, or null")
    lesson: Any = _key(None, "the lesson's {topic, scale} or null")
    seed: int = _key(0, "an integer >= 0", _at_least(0))
    l1: float = _key(0.0, "a number >= 0", _at_least(0))
    l2: float = _key(0.0, "a number >= 0", _at_least(0))
    test: bool = _key(True, "true or false")
    ckpt_path: Optional[str] = _key(None, "a checkpoint file or null")  # noqa: UP045
    auto_resume: bool = _key(True, "true or false")
    compile: bool = _key(False, "true or false")
    channels_last: Any = _key("auto", "auto, true or false", choices=MEMORY_FORMAT_SETTINGS)
    output_dir: str = _key("???", "a folder")


SCHEMAS = {"run": RunConfig, "status": StatusConfig, "tune": TuneConfig, "trainer": TrainerConfig}
for _name, _schema in SCHEMAS.items():
    ConfigStore.instance().store(group="schema", name=_name, node=_schema)

# Keys Hydra's instantiate reads itself; never arguments of the target.
HYDRA_KEYS = frozenset({"_target_", "_partial_", "_recursive_", "_convert_", "_args_"})


def check_node(name: str, node: Any, schema: type) -> None:
    """``node`` (a plain dict, resolved) against ``schema``: unknown keys, then the values'
    types (OmegaConf's structured merge), then each value's range or choices. ``name`` is
    the keys' prefix in messages ("" at the top level)."""
    prefix = f"{name}." if name else ""
    spec = {f.name: f for f in fields(schema) if f.name not in HYDRA_KEYS}
    if not isinstance(node, dict):
        raise ConfigError(f"{name}={node!r} is invalid: it must be a mapping of {list(spec)}")
    unknown = sorted(set(node) - set(spec) - HYDRA_KEYS)
    if unknown:
        where = f"{name} has unknown keys" if name else "the config has unknown top-level keys"
        raise ConfigError(f"{where} {unknown}; allowed: {list(spec)}")

    def invalid(key: str) -> ConfigError:
        return ConfigError(f"{prefix}{key}={node[key]!r} is invalid: it must be "
                           f"{spec[key].metadata['allowed']}")

    typed_keys = [k for k in node if k in spec and spec[k].type != "Any"]
    try:
        typed = OmegaConf.merge(OmegaConf.structured(schema), {k: node[k] for k in typed_keys})
    except ValidationError as err:
        raise invalid(str(err.key)) from None  # ours says all OmegaConf does, and what is allowed
    for key in node:
        if key not in spec:
            continue
        value, meta = node[key], spec[key].metadata
        if key in typed_keys and value is not None and _converted(value, typed[key]):
            raise invalid(key)
        choices = meta["choices"]() if callable(meta["choices"]) else meta["choices"]
        if choices is not None and not any(
                value is c or (value == c and type(value) is type(c)) for c in choices):
            # a name from a list is unknown; a value among others (auto, true, false) invalid
            word = "unknown" if all(isinstance(c, str) for c in choices) else "invalid"
            raise ConfigError(f"{prefix}{key}={value!r} is {word}; allowed: {list(choices)}")
        if meta["ok"] is not None and not meta["ok"](value):
            raise invalid(key)


def _converted(value: Any, typed: Any) -> bool:
    """Whether OmegaConf changed the value's type to fit the schema (the string 'no' to True,
    '3' to 3, a bool to a number): refused, since the raw value, not the converted one, is
    what the library gets. An integer for a float is fine."""
    return type(typed) is not type(value) and not (
        isinstance(typed, float) and isinstance(value, int) and not isinstance(value, bool))


def check_arguments(key: str, node: Any, target: Callable | None = None,
                    set_by_initlab: frozenset = frozenset()) -> None:
    """A node with a ``_target_`` (or the keyword arguments of ``target``): every key an
    argument of the target (unless it takes ``**kwargs``) that initlab does not pass itself;
    the same for the nodes with a ``_target_`` nested in it."""
    if not isinstance(node, dict) or (target is None and node.get("_target_") is None):
        return
    from hydra.utils import get_object

    try:
        target = target or get_object(node["_target_"])
    except Exception as err:
        raise ConfigError(f"{key}._target_={node['_target_']!r} cannot be imported: {err}") from err
    try:
        params = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: the call will tell
        params = None
    if params is not None and not any(p.kind == p.VAR_KEYWORD for p in params):
        names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        names -= set_by_initlab
        unknown = sorted(set(node) - names - HYDRA_KEYS)
        if unknown:
            name = node.get("_target_") or f"{target.__module__}.{target.__qualname__}"
            raise ConfigError(f"{key} has unknown keys {unknown}; allowed: {sorted(names)} "
                              f"(the arguments of {name})")
    for name, value in node.items():
        check_arguments(f"{key}.{name}", value)


def check_config(cfg: DictConfig) -> None:
    """Every key of the composed config, before anything is built (folders: check_folders)."""
    from initlab.data.robustness import check_corruptions

    resolved = OmegaConf.to_container(cfg, resolve=True)
    check_node("", resolved, RunConfig)
    lr = (resolved.get("optim") or {}).get("lr")
    if not _is_number(lr) or not lr > 0:
        raise ConfigError(f"optim.lr={lr!r} is invalid: it must be a number > 0")
    check_corruptions(resolved.get("robustness"))
    check_node("status", resolved.get("status"), StatusConfig)
    tune = resolved.get("tune")
    if tune is not None:
        check_node("tune", tune, TuneConfig)
        min_lr = tune.get("min_lr", TuneConfig.min_lr)
        max_lr = tune.get("max_lr", TuneConfig.max_lr)
        if not max_lr > min_lr:
            raise ConfigError(f"tune.max_lr={max_lr!r} is invalid: it must be a number > "
                              f"tune.min_lr={min_lr!r}")
    from initlab.pilots import check_pilots

    try:
        check_pilots(resolved.get("pilots"))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    check_node("trainer", resolved["trainer"], TrainerConfig)
    for name, node in (resolved.get("callbacks") or {}).items():
        if node is not None and "_target_" not in node:
            raise ConfigError(f"callbacks.{name} has no _target_: it sets options of a monitor "
                              f"that the chosen callbacks group does not include ({node})")
    from initlab.init import apply_init

    check_arguments("init", resolved.get("init"), apply_init, frozenset({"model", "activation"}))
    for group in ("augment", "data", "model", "optim", "scheduler", "logger", "progress_bar"):
        check_arguments(group, resolved.get(group))
    for group in ("callbacks", "checkpoint"):
        for name, node in (resolved.get(group) or {}).items():
            check_arguments(f"{group}.{name}", node)


def make_writable_folder(folder: Path) -> None:
    """Make ``folder`` (and its parents) as a run would, and write and remove a file in it;
    raises the OSError that stops either."""
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f".write-test-{uuid.uuid4().hex}"
    probe.write_bytes(b"initlab")
    probe.unlink()


def check_folder(key: str, value: str, folder: Path | None = None) -> None:
    """The folder a run will create and write (``folder``, default the value itself) can be:
    made now, as the run would, and a file written in it."""
    folder = Path(folder if folder is not None else value).expanduser()
    try:
        make_writable_folder(folder)
    except OSError as err:
        where = "" if folder == Path(value).expanduser() else f" (the run writes {folder})"
        raise ConfigError(f"{key}={value!r} is invalid: it must be a folder this process can "
                          f"create and write{where}; {err.strerror or err}: "
                          f"{err.filename or folder}") from err


def check_folders(cfg: DictConfig) -> None:
    """The folders a run writes besides output_dir (checked first, by check_output_dir): the
    data's (MNIST's raw files and their lock), the checkpoints' and the logger's."""
    data_dir = cfg.data.get("data_dir")
    if data_dir is not None:
        check_folder("data.data_dir", str(data_dir), Path(data_dir).expanduser() / "MNIST" / "raw")
    for name, node in (cfg.get("checkpoint") or {}).items():
        if node is not None and node.get("dirpath") is not None:
            check_folder(f"checkpoint.{name}.dirpath", str(node.dirpath))
    if cfg.get("logger") is not None and cfg.logger.get("save_dir") is not None:
        check_folder("logger.save_dir", str(cfg.logger.save_dir))


class CheckRunDir(Callback):
    """Hydra callback: the folder Hydra is about to make for a run (``hydra.run.dir``) or a
    multirun (``hydra.sweep.dir``) can be made, else the key is named before Hydra fails in
    its own traceback. Makes nothing: a folder is made and removed in the nearest existing
    parent."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check("hydra.run.dir", str(config.hydra.run.dir))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check("hydra.sweep.dir", str(config.hydra.sweep.dir))

    @staticmethod
    def _check(key: str, value: str) -> None:
        path = Path(value).expanduser().absolute()
        parent = next(p for p in (path, *path.parents) if p.exists())
        problem = f"{parent} is a file, not a folder" if not parent.is_dir() else None
        if problem is None:
            try:
                os.rmdir(tempfile.mkdtemp(dir=parent, prefix=".initlab-check-"))
            except OSError as err:
                problem = f"no folder can be made in {parent} ({err.strerror or err})"
        if problem is not None:
            raise SystemExit(f"{key}={value!r} is invalid: it must be a folder this process can "
                             f"create and write; {problem}")
