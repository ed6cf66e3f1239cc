"""s2s-attn: sequence-to-sequence translators with attention, in plain PyTorch."""

__version__ = "0.1.0"
