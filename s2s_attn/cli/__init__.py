"""Command-line entry points (console scripts in pyproject.toml)."""

from pathlib import Path


def config_dir() -> str:
    """The Hydra config tree: packaged with s2s_attn when installed, ``configs/`` in a source checkout."""
    package_root = Path(__file__).resolve().parent.parent
    for candidate in (package_root / "configs", package_root.parent / "configs"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"s2s-attn configs not found next to {package_root}")
