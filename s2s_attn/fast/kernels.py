"""Compiled CPU kernels for the element-wise work of training and decoding (``csrc/cpu_kernels.cpp``).

Written with PyTorch operations, the GRU cell and the additive attention of one step are a dozen small ATen calls
(as in the reference model); on a small CPU each one's overhead costs more than the arithmetic it does. These
kernels do the same work in one pass per step for the fused training loops (`s2s_attn.fast.recurrence`) and the
blockwise loss (`s2s_attn.fast.loss`); decoding's fused steps (`s2s_attn.fast.step`) and beam search
(`s2s_attn.decoding.beam`) use them for the attention, the GRU cell, the mixture of projected values and the logits'
log-sum-exp. Every fast path needs them. `GRULayer`'s whole loop (the encoder's, and the Luong decoder's without
input feeding) runs in C++ too, forward and backward, and without gradients (decoding's encoder). They are built
from source the first time they are needed (``torch.utils.cpp_extension.load``: a C++ compiler and ninja, ~15 s,
cached under ``~/.cache/torch_extensions``, rebuilt when the source changes) and used for float32 tensors on the
CPU.

``fast.kernels`` (`configure`): ``auto`` builds them when it can and otherwise warns once and runs the reference
model; ``true`` fails if they cannot be built; ``false`` never builds them (the reference model runs).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

log = logging.getLogger(__name__)

SOURCE = Path(__file__).parent / "csrc" / "cpu_kernels.cpp"
MODES = ("auto", "true", "false")

# compiler flags for the CPU capability torch itself dispatches to (ATen's vector types follow the macros)
_CAPABILITY_FLAGS = {
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-DCPU_CAPABILITY=AVX512",
               "-DCPU_CAPABILITY_AVX512"],
    "AVX2": ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"],
}

_mode = os.environ.get("S2S_KERNELS", "auto")
_ops: Any = None
_tried = False


class KernelBuildError(RuntimeError):
    """The kernels were asked for (``fast.kernels=true``) and could not be built or loaded."""


def configure(mode: str | bool) -> None:
    """Set the mode (``auto``, ``true`` or ``false``; a bool is ``true``/``false``); ``true`` builds them now."""
    global _mode
    mode = {True: "true", False: "false"}.get(mode, mode) if isinstance(mode, bool) else str(mode).lower()
    if mode not in MODES:
        raise ValueError(f"fast.kernels must be one of {', '.join(MODES)}, got {mode!r}")
    _mode = mode
    if mode == "true":
        ops()


def capability() -> str:
    """The CPU capability the kernels are built for: AVX512, AVX2 or DEFAULT (scalar code)."""
    found = torch.backends.cpu.get_cpu_capability()
    return found if found in _CAPABILITY_FLAGS else "DEFAULT"


def compiler_flags(cap: str) -> list[str]:
    """The flags the kernels are compiled with for a CPU capability (AVX512, AVX2, DEFAULT)."""
    return ["-O3", "-fopenmp", *_CAPABILITY_FLAGS.get(cap, ["-DCPU_CAPABILITY=DEFAULT"])]


def _build() -> Any:
    from torch.utils import cpp_extension

    if shutil.which("ninja") is None:
        environment_bin = os.path.dirname(sys.executable)
        if shutil.which("ninja", path=environment_bin) is None:
            raise RuntimeError("ninja is not installed (pip install ninja)")
        # installed with this environment, which is not activated: cpp_extension runs `ninja` from the PATH
        os.environ["PATH"] = environment_bin + os.pathsep + os.environ.get("PATH", "")
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        raise RuntimeError(f"no C++ compiler ({os.environ.get('CXX', 'c++')}) on the PATH")
    cap = capability()
    flags = compiler_flags(cap)
    # one build per PyTorch installation: two virtual environments (a checkout's .venv, a dev one) would otherwise
    # share a build directory and rebuild it in turn, their include paths differing
    installation = hashlib.sha1(f"{torch.__version__} {torch.__file__}".encode()).hexdigest()[:8]
    name = f"s2s_attn_kernels_{cap.lower()}_{installation}"
    build_dir = build_root() / name
    build_dir.mkdir(parents=True, exist_ok=True)
    log.info("loading the compiled CPU kernels for %s (built on first use, ~15 s; cached in %s)", cap, build_dir)
    with build_lock(build_dir):
        cpp_extension.load(name=name, sources=[str(SOURCE)], extra_cflags=flags, extra_ldflags=["-fopenmp"],
                           build_directory=str(build_dir), is_python_module=False, verbose=False)
    return torch.ops.s2s_attn


def build_root() -> Path:
    """Where the kernels are built: ``$TORCH_EXTENSIONS_DIR``, else PyTorch's default (``~/.cache/torch_extensions``),
    in a folder per Python version."""
    from torch.utils import cpp_extension

    root = os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root()
    return Path(root) / f"s2s_attn-py{sys.version_info.major}{sys.version_info.minor}"


@contextlib.contextmanager
def build_lock(build_dir: Path):
    """Hold an exclusive lock on ``build_dir`` while building or loading the kernels there, and clear a build lock
    left behind by an interrupted build. PyTorch marks a build in progress with a ``lock`` file and waits, without
    end, while one exists; a build that was killed (Ctrl-C, kill -9) leaves it behind, and every later run would
    hang. This lock is the operating system's (``flock``), released when its process ends however it ends; while
    this process holds it no other s2s-attn process builds here, so a ``lock`` file found now is stale."""
    try:
        import fcntl
    except ImportError:  # not POSIX: PyTorch's own lock alone
        yield
        return
    with open(build_dir / ".s2s_attn.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            stale = build_dir / "lock"
            if stale.exists():
                log.warning("removing %s, left by a build of the kernels that was interrupted", stale)
                stale.unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ops() -> Any:
    """``torch.ops.s2s_attn`` with the kernels, or None (mode ``false``, or ``auto`` and they could not be built)."""
    global _ops, _tried
    if _mode == "false":
        return None
    if not _tried:
        _tried = True
        try:
            _ops = _build()
        except Exception as error:  # a missing compiler, a failed build: the reference model does the same work
            if _mode == "true":
                raise KernelBuildError(f"fast.kernels=true, but the kernels could not be built: {error}") from error
            log.warning("compiled CPU kernels unavailable (%s); the reference model runs "
                        "(same results, slower). fast.kernels=false silences this.", str(error).splitlines()[0])
    elif _ops is None and _mode == "true":
        raise KernelBuildError("fast.kernels=true, but the kernels could not be built (see the first error)")
    return _ops


def applies(*tensors: Tensor | None) -> Any:
    """The kernels if they may run on these tensors (all float32 on the CPU), else None."""
    if any(t is not None and (t.device.type != "cpu" or t.dtype != torch.float32) for t in tensors):
        return None
    return ops()
