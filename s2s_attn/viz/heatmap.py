"""Attention heatmaps: matplotlib figures (PNG, TensorBoard images) and self-contained HTML pages.

The figures are drawn on their own Agg canvas (``matplotlib.figure.Figure`` + ``FigureCanvasAgg``),
so nothing here touches pyplot or the global backend.

Tokens are shown as SentencePiece writes them: a piece that starts a word begins with "▁"
(``▁cold``, ``.``: "cold." is one word in two pieces); the end-of-sentence token is ``</s>``.

Chinese, Japanese and Korean labels need a font with those characters, which matplotlib does not
ship. ``cjk_font_family()`` looks for one (Noto Sans CJK, Source Han Sans, WenQuanYi, Droid Sans
Fallback, AR PL, ...; or the file named by the ``S2S_CJK_FONT`` environment variable), also among
fonts installed after matplotlib built its font cache, and labels are drawn with DejaVu Sans and
that font as a per-glyph fallback. With no such font, the first figure with CJK labels logs one
warning that says what to install (``apt-get install fonts-wqy-microhei``), instead of drawing
empty boxes silently.
"""

from __future__ import annotations

import contextlib
import functools
import html
import logging
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

log = logging.getLogger(__name__)

EOS_TOKEN = "</s>"
BASE_FONT = "DejaVu Sans"  # ships with matplotlib: Latin, Greek, Cyrillic, "▁"
CJK_FONT_ENV = "S2S_CJK_FONT"
CJK_INSTALL_HINT = (
    "install a CJK font, e.g. `apt-get install fonts-wqy-microhei` (or fonts-noto-cjk) on Debian/Ubuntu "
    f"(`make install` does this when run as root), or set {CJK_FONT_ENV}=/path/to/a/font.ttf|otf|ttc"
)
# Families with Chinese characters, best first (matplotlib's names for them).
CJK_FAMILIES = (
    "Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans CJK TC", "Noto Sans CJK KR", "Noto Sans SC",
    "Source Han Sans SC", "Source Han Sans CN", "Source Han Sans", "WenQuanYi Micro Hei", "WenQuanYi Zen Hei",
    "Droid Sans Fallback", "AR PL UMing CN", "AR PL UKai CN", "AR PL New Sung", "Noto Serif CJK SC",
    "Microsoft YaHei", "SimHei", "PingFang SC", "Hiragino Sans GB", "Heiti SC", "Arial Unicode MS",
)
# File names worth opening when no family above is in matplotlib's (possibly stale) font list.
CJK_FILE_HINTS = re.compile(
    r"cjk|wqy|droidsansfallback|uming|ukai|sourcehan|notosans(sc|tc|jp|kr|hk)|notoserif(sc|tc|jp|kr)|"
    r"msyh|simhei|simsun|pingfang|hiragino|arialuni",
    re.IGNORECASE,
)
# Hiragana, katakana, CJK punctuation and ideographs, Hangul, full-width forms.
CJK_CHARS = re.compile(
    "[\u1100-\u11ff\u2e80-\u2fdf\u3000-\u30ff\u3100-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"
    "\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef\U00020000-\U0003134f]"
)
_warned_no_cjk_font = False


def has_cjk(text: str) -> bool:
    """True when ``text`` contains a Chinese, Japanese or Korean character."""
    return bool(CJK_CHARS.search(text))


def _font_has_cjk(path: str) -> bool:
    """The font file has glyphs for 中 and 文 (its first face, for a collection)."""
    from matplotlib.ft2font import FT2Font

    try:
        font = FT2Font(path)
        return font.get_char_index(0x4E2D) != 0 and font.get_char_index(0x6587) != 0
    except Exception:  # unreadable or not a font
        return False


def _register(path: str) -> str:
    """Add a font file to matplotlib's font manager; return its family name."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    font_manager.fontManager.addfont(path)
    return FT2Font(path).family_name


@functools.cache
def cjk_font_family() -> str | None:
    """The family name of a usable CJK font, registered with matplotlib, or None.

    Order: the file in $S2S_CJK_FONT; a known CJK family in matplotlib's font list; a font file on
    the system whose name looks CJK (covers fonts installed after matplotlib cached its list).
    """
    from matplotlib import font_manager

    env = os.environ.get(CJK_FONT_ENV)
    if env:
        if os.path.isfile(env) and _font_has_cjk(env):
            return _register(env)
        log.warning("%s=%s is not a readable font file with Chinese characters; ignoring it", CJK_FONT_ENV, env)
    files_by_family: dict[str, str] = {}
    for entry in font_manager.fontManager.ttflist:
        files_by_family.setdefault(entry.name, entry.fname)
    for family in CJK_FAMILIES:
        if family in files_by_family and _font_has_cjk(files_by_family[family]):
            return family
    known = {entry.fname for entry in font_manager.fontManager.ttflist}
    try:
        system_fonts = font_manager.findSystemFonts()
    except Exception:  # a broken fc-list or font directory: no fallback search
        system_fonts = []
    for path in sorted(system_fonts):
        if path not in known and CJK_FILE_HINTS.search(os.path.basename(path)) and _font_has_cjk(path):
            try:
                return _register(path)
            except Exception:
                continue
    return None


def font_families(texts: Sequence[str]) -> list[str] | None:
    """Font family list for these labels: DejaVu Sans with a CJK fallback when any label has CJK
    characters (None: matplotlib's default). Warns once per process when no CJK font exists."""
    global _warned_no_cjk_font
    if not any(has_cjk(t) for t in texts):
        return None
    family = cjk_font_family()
    if family is None:
        if not _warned_no_cjk_font:
            _warned_no_cjk_font = True
            log.warning("attention plots: no font with Chinese/Japanese/Korean characters was found, so those "
                        "labels are drawn as empty boxes; %s", CJK_INSTALL_HINT)
        return None
    return [BASE_FONT, family]


@contextlib.contextmanager
def _quiet_missing_glyphs():
    """Matplotlib warns once per missing glyph; `font_families` has already said it once."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph .* missing from")
        yield


def display_token(token: str) -> str:
    """A token as a plain-text label: kept as written (with its "▁"); "$" escaped for matplotlib."""
    return token.replace("$", r"\$")


def _as_matrix(weights) -> np.ndarray:
    if hasattr(weights, "detach"):  # a torch tensor
        weights = weights.detach().float().cpu().numpy()
    return np.asarray(weights, dtype=np.float32)


def _check_shape(matrix: np.ndarray, src_tokens: Sequence[str], tgt_tokens: Sequence[str]) -> None:
    if matrix.ndim != 2:
        raise ValueError(f"attention weights must be (tgt_len, src_len), got shape {matrix.shape}")
    if matrix.shape != (len(tgt_tokens), len(src_tokens)):
        raise ValueError(
            f"attention weights {matrix.shape} do not match {len(tgt_tokens)} target x {len(src_tokens)} source tokens"
        )


def attention_figure(weights, src_tokens: Sequence[str], tgt_tokens: Sequence[str], title: str | None = None,
                     *, vmax: float | None = 1.0, annotate: bool | None = None, dpi: int = 100):
    """A heatmap of one attention matrix: source tokens on the x axis (rotated unless short), target tokens on the
    y axis (top to bottom), a colour bar; cell values printed when the matrix is small (<= 12 x 12,
    or as ``annotate`` says). The colour scale is 0..1 (``vmax=None``: 0..max) so that images of the
    same sentence at different steps compare. Returns a ``matplotlib.figure.Figure`` on an Agg canvas.

    weights: (len(tgt_tokens), len(src_tokens)) array or tensor.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    matrix = _as_matrix(weights)
    _check_shape(matrix, src_tokens, tgt_tokens)
    n_tgt, n_src = matrix.shape
    src_labels = [display_token(t) for t in src_tokens]
    tgt_labels = [display_token(t) for t in tgt_tokens]
    families = font_families([*src_tokens, *tgt_tokens, title or ""])
    font = {"family": families} if families else {}

    longest = max(n_src, n_tgt, 1)
    fontsize = 10 if longest <= 15 else 8 if longest <= 30 else 6.5
    cell = 0.32 if longest <= 15 else 0.24 if longest <= 30 else 0.19  # inches per cell
    char = fontsize * 0.62 / 72  # inches per character of a label, roughly
    src_room = min(max((len(t) for t in src_labels), default=1), 20) * char + 0.4
    tgt_room = min(max((len(t) for t in tgt_labels), default=1), 20) * char + 0.4
    width = min(max(n_src * cell + tgt_room + 1.3, 4.0), 18.0)
    height = min(max(n_tgt * cell + src_room + (0.5 if title else 0.2), 3.0), 18.0)

    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    top = vmax if vmax is not None else max(float(matrix.max(initial=0.0)), 1e-6)
    image = ax.imshow(matrix, cmap="viridis", vmin=0.0, vmax=top, aspect="auto", interpolation="nearest")
    short = max((len(t) for t in src_labels), default=0) <= 4 and n_src <= 25
    rotation = 0 if short else 60 if n_src <= 20 else 90  # short labels (letters, CJK) stay upright
    ax.set_xticks(range(n_src))
    ax.set_xticklabels(src_labels, rotation=rotation, ha="right" if rotation == 60 else "center",
                       rotation_mode="anchor" if rotation == 60 else "default", fontsize=fontsize, **font)
    ax.set_yticks(range(n_tgt))
    ax.set_yticklabels(tgt_labels, fontsize=fontsize, **font)
    ax.set_xlabel("source", fontsize=fontsize + 1)
    ax.set_ylabel("target", fontsize=fontsize + 1)
    ax.set_xticks(np.arange(-0.5, n_src), minor=True)
    ax.set_yticks(np.arange(-0.5, n_tgt), minor=True)
    ax.grid(which="minor", color="white", linewidth=0.4, alpha=0.5)
    ax.tick_params(which="minor", length=0)
    ax.tick_params(which="major", length=2)
    if annotate is None:
        annotate = n_src <= 12 and n_tgt <= 12
    if annotate:
        for i in range(n_tgt):
            for j in range(n_src):
                value = float(matrix[i, j])
                ax.text(j, i, f"{value:.2f}".lstrip("0") if value < 1 else "1", ha="center", va="center",
                        fontsize=fontsize - 2.5, color="black" if value > 0.6 * top else "white")
    colorbar = fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
    colorbar.ax.tick_params(labelsize=fontsize - 1)
    colorbar.set_label("attention weight", fontsize=fontsize)
    if title:
        ax.set_title(display_token(title), fontsize=fontsize + 1, **font)
    return fig


def figure_to_array(fig) -> np.ndarray:
    """Render a figure to an (height, width, 3) uint8 RGB array (TensorBoard's ``dataformats="HWC"``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    with _quiet_missing_glyphs():
        canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_figure(fig, path: str | os.PathLike | BinaryIO) -> Path | BinaryIO:
    """Write a figure (PNG by the file's suffix; a binary file object gets a PNG) and return where it went."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    target = path if hasattr(path, "write") else Path(path)
    with _quiet_missing_glyphs():
        fig.savefig(target, format="png" if hasattr(target, "write") else None)
    return target


# ---- HTML ----------------------------------------------------------------------------------------

_HTML_STYLE = """
body { font-family: "DejaVu Sans", "Noto Sans", "Noto Sans CJK SC", "WenQuanYi Micro Hei", sans-serif;
       margin: 1.5em; color: #222; }
h1 { font-size: 1.15em; } h2 { font-size: 1em; margin-top: 1.5em; }
p.text { margin: 0.2em 0; } .label { color: #666; display: inline-block; min-width: 6em; }
table.attn { border-collapse: collapse; font-size: 12px; margin-top: 0.5em; }
table.attn td { width: 26px; height: 22px; text-align: center; border: 1px solid #fff; cursor: default; }
table.attn th { font-weight: normal; padding: 0 4px; white-space: nowrap; }
table.attn thead th { height: 6em; vertical-align: bottom; }
table.attn thead th div { writing-mode: vertical-rl; transform: rotate(180deg); }
table.attn tbody th { text-align: right; }
table.attn td:hover { outline: 2px solid #e4572e; }
.legend { font-size: 12px; color: #555; margin-top: 0.4em; }
"""


def _cell_colour(value: float, top: float) -> tuple[str, str]:
    """Background (viridis) and text colour for a weight."""
    from matplotlib import colormaps

    r, g, b, _ = colormaps["viridis"](min(max(value / top, 0.0), 1.0))
    background = f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"
    return background, "#000" if value > 0.6 * top else "#fff"


def attention_table_html(weights, src_tokens: Sequence[str], tgt_tokens: Sequence[str],
                         vmax: float | None = 1.0) -> str:
    """An HTML table of one attention matrix: one row per target token, one column per source token;
    each cell is coloured by its weight and has ``title="source → target: 0.734"`` (hover)."""
    matrix = _as_matrix(weights)
    _check_shape(matrix, src_tokens, tgt_tokens)
    top = vmax if vmax is not None else max(float(matrix.max(initial=0.0)), 1e-6)
    esc = html.escape
    out = ['<table class="attn">', "<thead><tr><th></th>"]
    out += [f"<th><div>{esc(t)}</div></th>" for t in src_tokens]
    out.append("</tr></thead><tbody>")
    for i, tgt in enumerate(tgt_tokens):
        out.append(f"<tr><th>{esc(tgt)}</th>")
        for j, src in enumerate(src_tokens):
            value = float(matrix[i, j])
            background, colour = _cell_colour(value, top)
            out.append(f'<td title="{esc(src)} → {esc(tgt)}: {value:.3f}" '
                       f'style="background:{background};color:{colour}"></td>')
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def attention_html(weights, src_tokens: Sequence[str], tgt_tokens: Sequence[str], *, source: str = "",
                   translation: str = "", title: str = "Attention", heads=None, png: str | None = None) -> str:
    """A self-contained HTML page (no scripts, no external files other than the optional ``png``
    next to it) with the source, the translation and the attention table (hover a cell for its
    value); with ``heads`` (h, tgt_len, src_len), one more table per head."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{_HTML_STYLE}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="text"><span class="label">source</span>{esc(source)}</p>',
        f'<p class="text"><span class="label">translation</span>{esc(translation)}</p>',
        "<h2>Attention (rows: target tokens, columns: source tokens; hover a cell for its weight)</h2>",
        attention_table_html(weights, src_tokens, tgt_tokens),
        '<p class="legend">Colour: weight from 0 (dark purple) to 1 (yellow). ▁ marks the start of a word '
        "(SentencePiece); &lt;/s&gt; is the end of the sentence.</p>",
    ]
    if heads is not None:
        for h, head in enumerate(_as_matrix(heads)):
            parts.append(f"<h2>Head {h}</h2>")
            parts.append(attention_table_html(head, src_tokens, tgt_tokens))
    if png:
        parts.append(f'<h2>Image</h2><p><img src="{esc(png)}" alt="attention heatmap"></p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
