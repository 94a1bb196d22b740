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
