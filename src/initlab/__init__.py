"""initlab: measure why weight initialization, optimizers and regularization decide whether a
network trains."""

from pathlib import Path

from omegaconf import OmegaConf


def project_root() -> Path:
    """The checkout's root for an editable install, else the current directory."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").exists() else Path.cwd()


# Configs say ${project_root:}/data so data and outputs land in one place whatever the cwd.
OmegaConf.register_new_resolver("project_root", lambda: str(project_root()), replace=True)


LESSON_SCALES = ("small", "full")


def lesson_scale(small, full, *, _root_):
    """``${lesson_scale:a,b}``: ``a`` when ``lesson.scale`` is small (the default lessons, minutes
    on a laptop CPU), ``b`` when it is full (the whole training set and a longer budget)."""
    scale = (_root_.get("lesson") or {}).get("scale", "small")
    if scale not in LESSON_SCALES:
        raise ValueError(f"lesson.scale={scale!r} is invalid; allowed: {list(LESSON_SCALES)}")
    return small if scale == "small" else full


OmegaConf.register_new_resolver("lesson_scale", lesson_scale, replace=True)
