#!/usr/bin/env python3
"""Check (or fix) the code links in the docs: every ``[`snippet`](../path/file.py#L12)`` must land on a line
that contains ``snippet`` (``#L12-L14``: one of those lines), and every relative link must name a file
that exists.

    python scripts/doc_links.py            # check docs/*.md and README*.md; exit 1 listing each broken link
    python scripts/doc_links.py --fix      # move each code link to the line where its snippet now is

After editing code that the docs link to, ``--fix`` updates the line numbers (the occurrence nearest to
the old line wins, so a snippet that appears twice keeps pointing at the same one); a snippet that is
gone is reported, to be rewritten by hand. ``tests/unit/test_doc_links.py`` runs the check.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# [text](target) where target has no spaces; images ![..](..) match too
LINK = re.compile(r"\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)\)")
CODE_TEXT = re.compile(r"^`(?P<code>[^`]+)`$")
ANCHOR = re.compile(r"^L(?P<first>\d+)(?:-L(?P<last>\d+))?$")


@dataclass
class Link:
    doc: Path
    line_no: int  # 1-based line of the doc
    text: str
    target: str
    start: int  # span of the target in that doc line
    end: int


def doc_files(root: Path = ROOT) -> list[Path]:
    return sorted((root / "docs").glob("*.md")) + sorted(root.glob("README*.md")) + [root / "data" / "README.md"]


def links_in(doc: Path) -> list[Link]:
    found, in_code_block = [], False
    for no, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), start=1):
        if line.lstrip().startswith("```"):
            in_code_block = not in_code_block
            continue
        if in_code_block:
            continue
        for match in LINK.finditer(line):
            target = match.group("target")
            if "://" in target or target.startswith(("#", "mailto:")):
                continue
            found.append(Link(doc, no, match.group("text"), target, match.start("target"), match.end("target")))
    return found


def resolve(link: Link) -> tuple[Path, str]:
    path, _, anchor = link.target.partition("#")
    return (link.doc.parent / path).resolve(), anchor


def snippet_lines(file: Path, snippet: str) -> list[int]:
    """1-based numbers of the lines of ``file`` that contain ``snippet``."""
    return [no for no, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1) if snippet in line]


def problems(link: Link) -> str | None:
    """Why ``link`` is broken, or None."""
    file, anchor = resolve(link)
    if not file.exists():
        return f"{link.target}: no such file"
    if not anchor:
        return None
    match = ANCHOR.match(anchor)
    if match is None:
        return None  # a heading anchor: not checked
    first, last = int(match.group("first")), int(match.group("last") or match.group("first"))
    lines = file.read_text(encoding="utf-8").splitlines()
    if not 1 <= first <= last <= len(lines):
        return f"{link.target}: {file.name} has {len(lines)} lines"
    code = CODE_TEXT.match(link.text.strip())
    if code is None:
        return None  # prose link text: the line number is the author's word
    snippet = code.group("code")
    if any(snippet in lines[no - 1] for no in range(first, last + 1)):
        return None
    where = snippet_lines(file, snippet)
    now = f"it is on line(s) {', '.join(map(str, where))}" if where else "it is no longer in the file"
    return f"{link.target}: `{snippet}` is not on line {first}{'-' + str(last) if last != first else ''}; {now}"


def fix(link: Link) -> str | None:
    """The corrected target of a code link whose snippet moved (nearest occurrence), else None."""
    file, anchor = resolve(link)
    match, code = ANCHOR.match(anchor or ""), CODE_TEXT.match(link.text.strip())
    if not file.exists() or match is None or code is None:
        return None
    first = int(match.group("first"))
    span = int(match.group("last") or first) - first
    where = snippet_lines(file, code.group("code"))
    if not where or first in where:
        return None
    best = min(where, key=lambda no: abs(no - first))
    path = link.target.partition("#")[0]
    return f"{path}#L{best}" + (f"-L{best + span}" if span else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fix", action="store_true", help="rewrite moved code links in place")
    args = parser.parse_args()
    broken = 0
    for doc in doc_files():
        if not doc.exists():
            continue
        links = links_in(doc)
        if args.fix:
            text_lines = doc.read_text(encoding="utf-8").splitlines(keepends=True)
            for link in reversed(links):  # right to left, so earlier spans stay valid
                new = fix(link)
                if new:
                    line = text_lines[link.line_no - 1]
                    text_lines[link.line_no - 1] = line[: link.start] + new + line[link.end :]
                    print(f"{doc.relative_to(ROOT)}:{link.line_no}: {link.target} -> {new}")
            doc.write_text("".join(text_lines), encoding="utf-8")
            links = links_in(doc)
        for link in links:
            reason = problems(link)
            if reason:
                broken += 1
                print(f"{doc.relative_to(ROOT)}:{link.line_no}: {reason}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
