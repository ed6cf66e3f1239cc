"""Command-line entry points (console scripts in pyproject.toml)."""

import sys
from pathlib import Path


def fail(prog: str, message: str) -> int:
    """Report a problem the user can fix as ``PROG: error: MESSAGE`` on stderr (no traceback); exit code 2."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


def config_dir() -> str:
    """The Hydra config tree: packaged with s2s_attn when installed, ``configs/`` in a source checkout."""
    package_root = Path(__file__).resolve().parent.parent
    for candidate in (package_root / "configs", package_root.parent / "configs"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"s2s-attn configs not found next to {package_root}")
