"""Checkpoints: written atomically, loaded with ``weights_only=True``, checked before use.

A checkpoint is a dict of tensors and plain Python values only (no pickled classes), so loading one
can never run code. It holds everything ``translate`` needs: the model's constructor arguments and
weights, the resolved run config, and both SentencePiece models (as uint8 tensors).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT = "s2s-attn-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message names the file and the reason."""


def versions() -> dict[str, str]:
    import sacrebleu
    import sentencepiece

    from .. import __version__

    return {
        "s2s_attn": __version__,
        "torch": str(torch.__version__),
        "python": sys.version.split()[0],
        "sentencepiece": str(sentencepiece.__version__),
        "sacrebleu": str(sacrebleu.__version__),
    }


def bytes_to_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()


def tensor_to_bytes(tensor: torch.Tensor) -> bytes:
    return bytes(tensor.cpu().numpy().tobytes())


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically: temp file in the same directory, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "versions": versions(), **payload}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a run directory (then its ``checkpoints/best.pt``, else ``last.pt``)."""
    path = Path(path)
    if path.is_dir():
        for candidate in (path / "checkpoints" / "best.pt", path / "checkpoints" / "last.pt",
                          path / "best.pt", path / "last.pt"):
            if candidate.is_file():
                return candidate
        raise CheckpointError(f"no checkpoint in {path}: expected checkpoints/best.pt or checkpoints/last.pt")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load safely (``weights_only=True``) and check that it is one of ours."""
    path = resolve_checkpoint(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, corrupt, or containing code/objects we refuse to unpickle
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"cannot load checkpoint {path}: it is corrupt, truncated or not a plain-tensor checkpoint "
            f"({reason[:200]})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an s2s-attn checkpoint (no '{FORMAT}' marker)")
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer s2s-attn (format {payload['format_version']}); upgrade s2s-attn"
        )
    for key in ("model", "model_config", "src_spm", "tgt_spm", "config"):
        if key not in payload:
            raise CheckpointError(f"{path} is incomplete: it has no {key!r} entry")
    payload["path"] = str(path)
    return payload
