"""The fast layer's one entry point: which implementation runs each component of a model.

A fast implementation claims exact classes and settings (``type(x) is``, never ``isinstance``): a subclass, a newly
registered attention or decoder, more layers, another device all run the reference model. Some conditions can only
be known at each call (autocast, gradients on or off, the tensors' dtype); there the fast function returns None and
the module runs its own code. Every fast path needs the compiled kernels (`kernels`): where they cannot be built the
reference model runs everywhere, after one warning, rather than a second, Python copy of each fused loop.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from ..model.attention import Attention
from ..model.decoder import BahdanauDecoder, LuongDecoder
from ..model.encoder import GRUEncoder
from . import gemm, kernels
from .allocator import keep_freed_memory

log = logging.getLogger(__name__)

REFERENCE = "reference"


@dataclass(frozen=True)
class FastSettings:
    """The ``fast`` config group: ``enabled`` false runs the reference model everywhere; the other keys are the CPU's
    fast-path settings (see configs/fast/auto.yaml)."""

    enabled: bool = True
    kernels: str = "auto"  # auto | true | false
    gemm: str = "auto"  # auto | blas | onednn
    keep_freed_memory: bool = True

    @classmethod
    def from_config(cls, cfg: Any) -> FastSettings:
        """From the run config's ``fast`` group (a mapping; None or missing keys take the defaults)."""
        if cfg is None:
            return cls()
        return cls(**{key: cfg[key] for key in ("enabled", "kernels", "gemm", "keep_freed_memory") if key in cfg})


def configure_process(settings: FastSettings) -> None:
    """Process-wide settings: the kernels' mode (``true`` builds them now, or fails), the float32 products' library,
    glibc malloc's thresholds. With ``enabled`` false, none of them: no kernels, PyTorch's BLAS, malloc as it is."""
    kernels.configure(settings.kernels if settings.enabled else "false")
    gemm.configure(settings.gemm if settings.enabled else "blas")
    if settings.enabled and settings.keep_freed_memory:
        keep_freed_memory()


@dataclass
class Decision:
    """What runs, per component: a short description of the fast implementation, or ``reference``."""

    encoder: str = REFERENCE
    decoder_loop: str = REFERENCE
    decoding_step: str = REFERENCE
    loss: str = REFERENCE
    products: str = "PyTorch"

    def line(self) -> str:
        """One line for the run's log."""
        parts = (f"{key.replace('_', ' ')}: {value}" for key, value in asdict(self).items())
        return "implementations: " + "; ".join(parts)

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _clear(model) -> None:
    """Every seam back to the reference."""
    model.encoder.fast = None
    model.decoder.fast_loop = None
    model.decoder.fast_stepper = None
    model.fast_loss = None


def accelerate(model, settings: FastSettings | None = None) -> Decision:
    """Decide which implementation runs each component of ``model`` (a `Seq2Seq` on its device), install the fast
    ones on its seams, and return the decision. Call it again after moving the model to another device."""
    from . import recurrence, step  # (they import the model's modules)
    from .loss import blockwise_cross_entropy

    settings = settings or FastSettings()
    _clear(model)
    decision = Decision()
    device = next(model.parameters()).device
    if not settings.enabled or device.type != "cpu":  # on a GPU the reference is the fast path (cuDNN's GRU)
        return decision
    if kernels.ops() is None:  # every fast path needs them (`kernels.ops` warned once): the reference runs
        return decision
    decision.products = {"onednn": "oneDNN", "blas": "PyTorch's BLAS"}[gemm.backend()] + " (float32)"

    encoder, decoder = model.encoder, model.decoder
    if (type(encoder) is GRUEncoder and encoder.rnn.bidirectional and encoder.rnn.num_layers == 1
            and encoder.rnn.bias):
        encoder.fast = recurrence.encoder_loop
        decision.encoder = "fused GRU layer in C++"

    one_layer = getattr(decoder, "num_layers", None) == 1
    if type(decoder) is BahdanauDecoder and one_layer and type(decoder.attention) in recurrence.ADDITIVE_ATTENTIONS:
        decoder.fast_loop = recurrence.bahdanau_loop
        decision.decoder_loop = "fused additive-attention loop with compiled kernels"
    elif type(decoder) is LuongDecoder and one_layer and not decoder.input_feeding and decoder.rnn.bias:
        decoder.fast_loop = recurrence.luong_loop
        decision.decoder_loop = "fused GRU layer in C++"

    has_biases = decoder.output.bias is not None
    if (type(decoder) is BahdanauDecoder and one_layer and type(decoder.attention) in recurrence.ADDITIVE_ATTENTIONS
            and has_biases and decoder.pre_output.bias is not None):
        decoder.fast_stepper = step.fused_stepper
        decision.decoding_step = "fused Bahdanau step"
    elif (type(decoder) is LuongDecoder and one_layer and decoder.rnn.bias and has_biases
          and type(decoder.attention).forward is Attention.forward):
        decoder.fast_stepper = step.fused_stepper
        decision.decoding_step = "fused Luong step"

    model.fast_loss = blockwise_cross_entropy
    decision.loss = "blockwise output layer and loss with compiled kernels"
    return decision
