"""Checkpoints: written atomically, loaded with ``weights_only=True``, checked before use.

A checkpoint is a dict of tensors and plain Python values only (no pickled classes), so loading one
can never run code. It holds everything ``translate`` needs: the model's constructor arguments and
weights, the resolved run config, and both SentencePiece models (as uint8 tensors). A run directory
holds ``checkpoints/best.pt`` (the weights with the best validation BLEU) and the last few
``checkpoints/step_NNNNNNNN.pt`` (the whole training state, for resuming; see ``training.resume``).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..data.tokenizer import Tokenizer

FORMAT = "s2s-attn-checkpoint"
FORMAT_VERSION = 1
STEP_PATTERN = re.compile(r"^step_(\d+)\.pt$")


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


def tokenizer_tensors(tokenizer: Tokenizer) -> dict[str, torch.Tensor]:
    """The tokenizer as checkpoint entries: both SentencePiece models (bytes as uint8 tensors) and, for a side
    whose vocabulary is a subset of its model's pieces, the kept piece ids (``src_pieces`` / ``tgt_pieces``)."""
    entries = {"src_spm": bytes_to_tensor(tokenizer.src_proto), "tgt_spm": bytes_to_tensor(tokenizer.tgt_proto)}
    for side, subset in (("src", tokenizer.src_subset), ("tgt", tokenizer.tgt_subset)):
        if subset is not None:
            entries[f"{side}_pieces"] = torch.tensor(subset.kept, dtype=torch.int64)
    return entries


def tokenizer_from(payload: dict[str, Any]) -> Tokenizer:
    """The tokenizer a checkpoint was trained with (`tokenizer_tensors`; older checkpoints have no piece lists:
    whole-model vocabularies)."""
    kept = {side: payload[f"{side}_pieces"].tolist() if f"{side}_pieces" in payload else None
            for side in ("src", "tgt")}
    try:
        return Tokenizer(tensor_to_bytes(payload["src_spm"]), tensor_to_bytes(payload["tgt_spm"]),
                         kept["src"], kept["tgt"])
    except (ValueError, RuntimeError) as error:
        raise CheckpointError(f"{payload.get('path', 'the checkpoint')} has an unreadable tokenizer: {error}") from None


def non_finite_tensors(state: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors in a state dict that hold NaN or infinity."""
    return [name for name, tensor in state.items()
            if torch.is_tensor(tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all()]


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically: temp file in the same directory, fsync, rename.

    A reader (or a run killed at any moment) sees either the previous file or the complete new one.
    Model weights holding NaN or infinity are refused (CheckpointError): a diverged model never
    replaces a good checkpoint.
    """
    path = Path(path)
    bad = non_finite_tensors(payload.get("model", {}))
    if bad:
        raise CheckpointError(f"refusing to write {path}: the model has non-finite values in {', '.join(bad[:3])}"
                              f"{' ...' if len(bad) > 3 else ''}")
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "versions": versions(), **payload}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete the ``.NAME.XXXX.tmp`` files a killed `save_checkpoint` left behind; return them."""
    directory = Path(directory)
    stale = sorted(directory.glob(".*.tmp")) if directory.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def step_checkpoint_path(directory: str | os.PathLike, step: int) -> Path:
    return Path(directory) / f"step_{step:08d}.pt"


def step_checkpoints(directory: str | os.PathLike) -> list[tuple[int, Path]]:
    """The ``step_N.pt`` files in ``directory`` as (step, path), oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := STEP_PATTERN.match(p.name)) and p.is_file()]
    return sorted(found)


def prune_step_checkpoints(directory: str | os.PathLike, keep_last: int) -> list[Path]:
    """Delete all but the ``keep_last`` newest ``step_N.pt`` files; return the deleted paths."""
    found = step_checkpoints(directory)
    doomed = [path for _, path in found[: max(len(found) - max(keep_last, 1), 0)]]
    for path in doomed:
        path.unlink(missing_ok=True)
    return doomed


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a run directory: its ``checkpoints/best.pt``, else its newest
    ``checkpoints/step_N.pt`` (else ``last.pt``, as older versions wrote)."""
    path = Path(path)
    if path.is_dir():
        for directory in (path / "checkpoints", path):
            steps = step_checkpoints(directory)
            for candidate in (directory / "best.pt", steps[-1][1] if steps else None, directory / "last.pt"):
                if candidate is not None and candidate.is_file():
                    return candidate
        raise CheckpointError(f"no checkpoint in {path}: expected checkpoints/best.pt or checkpoints/step_N.pt")
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
