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
