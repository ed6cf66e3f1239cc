"""Attention visualisation: heatmaps (PNG, TensorBoard, HTML) and attention statistics."""

from .heatmap import (
    EOS_TOKEN,
    attention_figure,
    attention_html,
    cjk_font_family,
    figure_to_array,
    save_figure,
)
from .stats import DIAGONAL_BAND, attention_entropy, attention_statistics, diagonal_share

__all__ = [
    "DIAGONAL_BAND",
    "EOS_TOKEN",
    "attention_entropy",
    "attention_figure",
    "attention_html",
    "attention_statistics",
    "cjk_font_family",
    "diagonal_share",
    "figure_to_array",
    "save_figure",
]
