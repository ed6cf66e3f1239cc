"""The docs' code links land on the lines they name (docs/attention.md links every formula to its code)."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("doc_links", ROOT / "scripts" / "doc_links.py")
doc_links = importlib.util.module_from_spec(spec)
sys.modules["doc_links"] = doc_links  # its dataclass looks its module up
spec.loader.exec_module(doc_links)


def test_every_relative_link_and_code_link_in_the_docs_lands_where_it_says():
    broken = [f"{link.doc.name}:{link.line_no}: {reason}"
              for doc in doc_links.doc_files() if doc.exists()
              for link in doc_links.links_in(doc) if (reason := doc_links.problems(link))]
    assert not broken, "broken doc links (python scripts/doc_links.py --fix moves code links):\n" + "\n".join(broken)


def test_the_attention_doc_links_every_variant_to_its_code():
    links = doc_links.links_in(ROOT / "docs" / "attention.md")
    code_files = {doc_links.resolve(link)[0].name for link in links if "#L" in link.target}
    assert {"attention.py", "decoder.py", "seq2seq.py"} <= code_files
    text = (ROOT / "docs" / "attention.md").read_text(encoding="utf-8")
    for name in ("bahdanau", "luong_concat", "luong_dot", "luong_general", "scaled_dot", "multihead"):
        assert f"attention={name}" in text


@pytest.fixture
def doc_with(tmp_path):
    code = tmp_path / "code.py"
    code.write_text("a = 1\nb = 2\nc = a + b\n")
    doc = tmp_path / "doc.md"

    def write(markdown: str):
        doc.write_text(markdown)
        return doc_links.links_in(doc)

    return write


def test_a_code_link_to_the_wrong_line_is_reported_with_the_line_it_moved_to(doc_with):
    (link,) = doc_with("see [`c = a + b`](code.py#L2)\n")
    assert "is on line(s) 3" in doc_links.problems(link)
    assert doc_links.fix(link) == "code.py#L3"


def test_a_code_link_within_its_range_a_prose_link_and_a_missing_file(doc_with):
    in_range, prose, missing = doc_with("[`b = 2`](code.py#L1-L2) [the code](code.py#L3) [x](nope.py)\n")
    assert doc_links.problems(in_range) is None
    assert doc_links.problems(prose) is None
    assert "no such file" in doc_links.problems(missing)


def test_links_inside_code_blocks_and_web_links_are_not_checked(doc_with):
    assert doc_with("```\n[`z`](code.py#L1)\n```\n[site](https://example.org/x.py#L9)\n") == []


# --- what counts as a link -----------------------------------------------------------------------------------


def test_a_link_whose_text_holds_brackets_is_found_and_checked(doc_with):
    (link,) = doc_with("the mask: [`scores[mask]`](code.py#L1)\n")
    assert link.text == "`scores[mask]`" and link.target == "code.py#L1"
    assert "`scores[mask]` is not on line 1; it is no longer in the file" in doc_links.problems(link)


def test_link_texts_with_balanced_or_escaped_brackets_and_links_in_tables_are_found(doc_with):
    links = doc_with(
        "| step | code |\n"
        "|---|---|\n"
        "| W_o [h_1; h_2] | [`torch.cat([h, c], dim=-1)`](code.py#L1), [W_o [h_1; h_2]](code.py#L2) |\n"
        "an escaped \\[bracket](code.py) and [a \\] b](code.py#L3)\n"
    )
    assert [link.text for link in links] == ["`torch.cat([h, c], dim=-1)`", "W_o [h_1; h_2]", "a \\] b"]
    assert [link.line_no for link in links] == [3, 3, 4]


def test_a_link_text_may_run_over_two_lines(doc_with):
    (link,) = doc_with("see [the\nsum](code.py#L9)\n")
    assert link.line_no == 2 and "code.py has 3 lines" in doc_links.problems(link)


def test_brackets_inside_code_spans_and_fenced_blocks_are_not_links(doc_with):
    code_spans = "`x[0](nope.py)` and ``[`y`](nope.py)``\n"
    tilde_fence = "~~~\n[z](nope.py)\n~~~\n"
    long_fence = "````\n```\n[w](nope.py)\n````\n"  # the inner ``` does not close it
    assert doc_with(code_spans + tilde_fence + long_fence) == []


def test_an_image_to_a_missing_file_is_reported_and_one_that_exists_is_not(doc_with, tmp_path):
    (tmp_path / "plot.png").write_bytes(b"\x89PNG")
    found, missing = doc_with("![the plot](plot.png)\n\n![a heatmap](img/heatmap.png)\n")
    assert doc_links.problems(found) is None
    assert doc_links.problems(missing) == "img/heatmap.png: no such file"


def test_an_image_inside_a_link_and_a_reference_definition_are_links_too(doc_with):
    image, outer, definition = doc_with("[![badge](badge.svg)](code.py)\n\n[ref]: missing.md\n")
    assert (outer.target, image.target, definition.target) == ("code.py", "badge.svg", "missing.md")
    assert "no such file" in doc_links.problems(image)
    assert "no such file" in doc_links.problems(definition)


# --- stale line anchors in links with brackets are reported and fixed ------------------------------------------


def test_a_stale_anchor_in_a_link_with_brackets_is_reported_and_fixed(tmp_path):
    code = tmp_path / "code.py"
    code.write_text("x = 1\nweights = scores[mask]\n")
    doc = tmp_path / "doc.md"
    doc.write_text("| score | [`weights = scores[mask]`](code.py#L1) |\n")
    (link,) = doc_links.links_in(doc)
    assert "is on line(s) 2" in doc_links.problems(link)
    assert doc_links.fix(link) == "code.py#L2"
    doc_links.fix_doc(doc)
    assert doc.read_text() == "| score | [`weights = scores[mask]`](code.py#L2) |\n"
    assert [doc_links.problems(link) for link in doc_links.links_in(doc)] == [None]


def test_a_line_anchor_past_the_end_of_the_file_is_reported(doc_with):
    (link,) = doc_with("[the end](code.py#L3-L4)\n")
    assert doc_links.problems(link) == "code.py#L3-L4: code.py has 3 lines"


# --- heading anchors ---------------------------------------------------------------------------------------


@pytest.fixture
def guide(tmp_path):
    """A markdown file with an English, a Chinese and a repeated heading (and a heading-like line in code)."""
    path = tmp_path / "guide.md"
    path.write_text(
        "# Guide\n\n## Resuming a run\n\n## 恢复中断的运行\n\n## On an AMD EPYC (Zen 4), 2026-11-23\n\n"
        "## Notes\n\n## Notes\n\n```bash\n# Not a heading\n```\n"
    )
    return path


def test_github_anchors_of_headings():
    assert doc_links.slug("Resuming a run") == "resuming-a-run"
    assert doc_links.slug("On an AMD EPYC (Zen 4), 2026-11-23") == "on-an-amd-epyc-zen-4-2026-11-23"
    assert doc_links.slug("在 AMD EPYC（Zen 4）上，2026-11-23") == "在-amd-epyczen-4上2026-11-23"
    assert doc_links.slug("2. The score functions (`attention=<name>`)") == "2-the-score-functions-attentionname"
    assert doc_links.slug("See [the *README*](README.md) and `snake_case`") == "see-the-readme-and-snake_case"


def test_a_repeated_heading_gets_a_number_and_headings_in_code_blocks_do_not_count(guide):
    assert doc_links.heading_anchors(guide.read_text()) == [
        "guide", "resuming-a-run", "恢复中断的运行", "on-an-amd-epyc-zen-4-2026-11-23", "notes", "notes-1"]


def test_heading_anchors_into_another_file_resolve_or_are_reported(doc_with, guide):
    links = doc_with(
        "[a](guide.md#resuming-a-run) [b](guide.md#恢复中断的运行) [c](guide.md#notes-1) "
        "[d](guide.md#%E6%81%A2%E5%A4%8D%E4%B8%AD%E6%96%AD%E7%9A%84%E8%BF%90%E8%A1%8C)\n"
        "[e](guide.md#resuming-the-run) [f](guide.md#notes-2) [g](guide.md#not-a-heading)\n"
    )
    assert [doc_links.problems(link) for link in links[:4]] == [None] * 4
    assert [doc_links.problems(link) for link in links[4:]] == [
        "guide.md#resuming-the-run: guide.md has no heading #resuming-the-run; did you mean #resuming-a-run?",
        "guide.md#notes-2: guide.md has no heading #notes-2; did you mean #notes-1?",
        "guide.md#not-a-heading: guide.md has no heading #not-a-heading",
    ]


def test_heading_anchors_within_the_same_file_are_checked(doc_with):
    good, bad = doc_with("# Top\n\n## 数据\n\nsee [data](#数据) and [the end](#the-end)\n")
    assert doc_links.problems(good) is None
    assert doc_links.problems(bad) == "#the-end: doc.md has no heading #the-end"
