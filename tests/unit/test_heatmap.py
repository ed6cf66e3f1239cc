"""Attention heatmaps (figure, array, HTML, CJK font), attention statistics, per-head greedy attention."""

import logging
import math
import warnings

import numpy as np
import pytest
import torch

from s2s_attn.viz import heatmap
from s2s_attn.viz.heatmap import attention_figure, attention_html, figure_to_array, save_figure
from s2s_attn.viz.stats import attention_entropy, attention_statistics, diagonal_mask, diagonal_share

SRC = ["▁I", "▁am", "▁cold", ".", "</s>"]
TGT = ["▁J", "'", "ai", "▁froid", ".", "</s>"]


def random_attention(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    weights = np.random.default_rng(seed).random((rows, cols))
    return weights / weights.sum(axis=1, keepdims=True)


def tick_texts(labels) -> list[str]:
    return [label.get_text() for label in labels]


# ---- figure ----------------------------------------------------------------------------------------

def test_figure_shows_the_tokens_on_the_axes_and_has_a_colorbar():
    fig = attention_figure(random_attention(len(TGT), len(SRC)), SRC, TGT, title="I am cold.")
    ax = fig.axes[0]
    assert tick_texts(ax.get_xticklabels()) == SRC  # source on x
    assert tick_texts(ax.get_yticklabels()) == TGT  # target on y, first token at the top
    assert ax.get_ylim()[0] > ax.get_ylim()[1]
    assert all(label.get_rotation() > 0 for label in ax.get_xticklabels())  # long labels are rotated
    upright = attention_figure(np.eye(3), ["▁a", "▁b", "</s>"], ["x", "y", "z"]).axes[0]
    assert all(label.get_rotation() == 0 for label in upright.get_xticklabels())  # short ones are not
    assert len(fig.axes) == 2  # the heatmap and its colour bar
    assert ax.get_title() == "I am cold."
    image = ax.images[0].get_array()
    assert image.shape == (len(TGT), len(SRC))


def test_figure_accepts_a_tensor_and_rejects_a_shape_that_does_not_match_the_tokens():
    fig = attention_figure(torch.full((2, 3), 1 / 3), ["a", "b", "c"], ["x", "y"])
    assert fig.axes[0].images[0].get_array().shape == (2, 3)
    with pytest.raises(ValueError, match="do not match 2 target x 4 source"):
        attention_figure(np.ones((2, 3)), ["a", "b", "c", "d"], ["x", "y"])
    with pytest.raises(ValueError, match=r"\(tgt_len, src_len\)"):
        attention_figure(np.ones((2, 3, 1)), ["a", "b", "c"], ["x", "y"])


def test_figure_to_array_is_hwc_uint8_of_the_figure_size(tmp_path):
    fig = attention_figure(random_attention(3, 4), list("abcd"), list("xyz"), dpi=50)
    array = figure_to_array(fig)
    width, height = fig.get_size_inches() * fig.dpi
    assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3
    assert abs(array.shape[0] - height) <= 1 and abs(array.shape[1] - width) <= 1
    assert array.std() > 0  # something was drawn
    path = save_figure(fig, tmp_path / "a.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_40_by_40_figure_stays_readable():
    tokens = [f"▁w{i}" for i in range(40)]
    fig = attention_figure(random_attention(40, 40), tokens, tokens)
    width, height = fig.get_size_inches()
    assert 6 <= width <= 18 and 6 <= height <= 18
    ax = fig.axes[0]
    assert len(ax.get_xticklabels()) == 40 and len(ax.get_yticklabels()) == 40
    assert min(label.get_fontsize() for label in ax.get_xticklabels()) >= 6
    assert not ax.texts  # no cell values printed on a big matrix
    small = attention_figure(random_attention(3, 3), list("abc"), list("xyz"))
    assert len(small.axes[0].texts) == 9  # but on a small one


def test_dollar_signs_in_tokens_do_not_turn_into_mathtext():
    fig = attention_figure(random_attention(1, 2), ["$5", "$"], ["x"])
    assert tick_texts(fig.axes[0].get_xticklabels()) == [r"\$5", r"\$"]
    figure_to_array(fig)  # renders without a mathtext error


# ---- Chinese labels --------------------------------------------------------------------------------

def test_chinese_labels_render_with_a_cjk_font_or_warn_once_what_to_install(caplog, monkeypatch):
    monkeypatch.setattr(heatmap, "_warned_no_cjk_font", False)
    family = heatmap.cjk_font_family()
    src, tgt = ["▁我", "很", "冷", "。", "</s>"], ["▁I", "▁am", "▁cold", ".", "</s>"]
    with caplog.at_level(logging.WARNING, logger="s2s_attn.viz.heatmap"):
        fig = attention_figure(random_attention(5, 5), src, tgt, title="我很冷。")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fig.canvas.draw()  # not figure_to_array: that one silences the missing-glyph warnings
    missing = [str(w.message) for w in caught if "missing from" in str(w.message)]
    if family is not None:
        labels = fig.axes[0].get_xticklabels()
        assert family in labels[0].get_fontfamily()
        assert not missing, f"CJK font {family} still misses glyphs: {missing[:3]}"
        assert not caplog.records
    else:
        assert len(caplog.records) == 1 and "fonts-wqy-microhei" in caplog.text


def test_without_a_cjk_font_the_warning_comes_once_and_names_the_package(caplog, monkeypatch):
    monkeypatch.setattr(heatmap, "cjk_font_family", lambda: None)
    monkeypatch.setattr(heatmap, "_warned_no_cjk_font", False)
    with caplog.at_level(logging.WARNING, logger="s2s_attn.viz.heatmap"):
        attention_figure(np.eye(2), ["a", "b"], ["x", "y"])  # no CJK: no warning
        assert not caplog.records
        for _ in range(3):
            figure_to_array(attention_figure(np.eye(2), ["中", "文"], ["x", "y"]))
    assert len(caplog.records) == 1
    assert "apt-get install fonts-wqy-microhei" in caplog.text and "S2S_CJK_FONT" in caplog.text


def test_cjk_detection():
    assert heatmap.has_cjk("▁我") and heatmap.has_cjk("ひらがな") and heatmap.has_cjk("한국어")
    assert not heatmap.has_cjk("▁café") and not heatmap.has_cjk("</s>")


# ---- HTML --------------------------------------------------------------------------------------------

def test_html_page_is_self_contained_with_hover_values():
    weights = np.array([[0.734, 0.266], [0.1, 0.9]])
    page = attention_html(weights, ["▁a", "<b>"], ["▁x", "</s>"], source="a b", translation="x",
                          heads=np.stack([weights, weights[::-1]]))
    assert 'title="▁a → ▁x: 0.734"' in page
    assert 'title="&lt;b&gt; → &lt;/s&gt;: 0.900"' in page  # tokens are escaped
    assert page.count("<table") == 3  # the mean and two heads
    assert "<script" not in page and "http" not in page  # no scripts, no CDN
    with pytest.raises(ValueError):
        attention_html(weights, ["a"], ["x", "y"])


# ---- statistics ---------------------------------------------------------------------------------

def test_a_perfect_diagonal_has_share_one_and_entropy_zero():
    eye = np.eye(7)
    assert diagonal_share(eye) == pytest.approx(1.0)
    assert attention_entropy(eye) == pytest.approx(0.0, abs=1e-12)
    assert diagonal_share(torch.eye(3)) == pytest.approx(1.0)  # tensors too


def test_uniform_attention_has_entropy_log_src_len():
    uniform = np.full((4, 6), 1 / 6)
    assert attention_entropy(uniform) == pytest.approx(math.log(6))
    assert 0.1 < diagonal_share(uniform) < 0.5  # about 2 x band


def test_the_anti_diagonal_is_mostly_off_the_diagonal_band():
    anti = np.eye(9)[::-1]
    assert diagonal_share(anti) == pytest.approx(1 / 9)  # only the middle cell
    assert attention_entropy(anti) == pytest.approx(0.0, abs=1e-12)


def test_the_band_always_holds_the_nearest_source_position():
    for tgt_len, src_len in [(4, 3), (1, 1), (10, 2), (3, 17)]:
        assert diagonal_mask(tgt_len, src_len).any(axis=1).all()


def test_statistics_over_sentences_weigh_every_row_the_same():
    stats = attention_statistics([np.eye(3), np.full((1, 4), 0.25), None])
    assert stats["rows"] == 4
    assert stats["entropy"] == pytest.approx(math.log(4) / 4)
    assert stats["diagonal_share"] == pytest.approx((3 + diagonal_share(np.full((1, 4), 0.25))) / 4)
    empty = attention_statistics([])
    assert empty["rows"] == 0 and math.isnan(empty["entropy"])


def test_rows_without_weight_are_ignored():
    weights = np.array([[0.0, 1.0], [0.0, 0.0]])
    assert attention_entropy(weights) == 0.0
    assert attention_statistics([weights])["rows"] == 1


# ---- greedy decoding with per-head weights ------------------------------------------------------------

def test_greedy_decode_returns_per_head_weights_whose_mean_is_the_attention(make_tiny_model):
    from s2s_attn.decoding.greedy import greedy_decode

    model = make_tiny_model(attention="multihead")
    src = torch.tensor([[5, 6, 7, 3], [8, 3, 0, 0]])
    src_len = torch.tensor([4, 2])
    hyps, atts, heads = greedy_decode(model, src, src_len, max_len=6, return_heads=True)
    plain_hyps, plain_atts = greedy_decode(model, src, src_len, max_len=6, return_attention=True)
    assert hyps == plain_hyps
    for att, head, plain, length in zip(atts, heads, plain_atts, [4, 2]):
        assert head.shape == (2, att.size(0), length)
        torch.testing.assert_close(head.mean(dim=0), att)
        torch.testing.assert_close(att, plain)


def test_greedy_decode_without_heads_gives_none_per_sentence(make_tiny_model):
    from s2s_attn.decoding.greedy import greedy_decode

    model = make_tiny_model(attention="bahdanau")
    hyps, atts, heads = greedy_decode(model, torch.tensor([[5, 6, 3]]), torch.tensor([3]), max_len=4,
                                      return_heads=True)
    assert heads == [None] and atts[0].shape[1] == 3


def test_a_s2s_cjk_font_that_is_not_a_font_is_reported_and_ignored(monkeypatch, caplog, tmp_path):
    (tmp_path / "fake.ttf").write_bytes(b"not a font")
    monkeypatch.setenv("S2S_CJK_FONT", str(tmp_path / "fake.ttf"))
    heatmap.cjk_font_family.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="s2s_attn.viz.heatmap"):
            heatmap.cjk_font_family()
    finally:
        heatmap.cjk_font_family.cache_clear()  # the next caller looks again, without the variable
    assert "S2S_CJK_FONT" in caplog.text and "ignoring it" in caplog.text


def test_the_tensorboard_probe_takes_sentences_spread_over_the_source_lengths():
    from types import SimpleNamespace

    from s2s_attn.training.trainer import AttentionProbe

    longest = "This sentence is a good deal longer than the rest."
    lines = ["Go."] * 50 + ["", "   "] + ["I am very cold today."] * 30 + [longest]
    probe = AttentionProbe(SimpleNamespace(src_lines=lines), count=3)
    lengths = sorted({len(lines[i]) for i in probe.indices})
    assert len(probe.indices) == 3 and lengths == [3, 21]  # not only the one-word sentences at the start
    assert all(lines[i].strip() for i in probe.indices)
    assert AttentionProbe(SimpleNamespace(src_lines=["a", "", "b"]), count=4).indices == [0, 2]
    assert AttentionProbe(SimpleNamespace(src_lines=lines), count=0).indices == []
