#!/usr/bin/env python3
"""Check (or fix) the links in the docs: every relative link must name a file that exists, every line anchor
(``#L12``, ``#L12-L14``) must be within its file, every heading anchor (``README.md#resuming-a-run``, or
``#some-heading`` within the same file) must name a heading of that markdown file, and every code link
``[`snippet`](../path/file.py#L12)`` must land on a line that contains ``snippet`` (``#L12-L14``: one of those
lines).

    python scripts/doc_links.py                    # check docs/**/*.md, README*.md and data/README.md;
                                                   # exit 1 listing each broken link
    python scripts/doc_links.py --fix              # move each code link to the line where its snippet now is
    python scripts/doc_links.py --fix docs/x.md    # only these files

After editing code that the docs link to, ``--fix`` updates the line numbers (the occurrence nearest to
the old line wins, so a snippet that appears twice keeps pointing at the same one); a snippet that is
gone, and every other broken link, is reported, to be rewritten by hand.

What counts as a link: inline links and images, ``[text](target)`` and ``![alt](target)``, anywhere outside
fenced code blocks and code spans (in tables too; the text may hold balanced brackets, escaped brackets and
code spans with any brackets, as in ``[`scores[mask]`](attention.py#L40)``), and reference definitions
``[label]: target``. Heading anchors follow GitHub's rules (see ``slug``). Web links (``https://...``,
``mailto:``) are not checked. ``tests/unit/test_doc_links.py`` runs the check.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
CODE_TEXT = re.compile(r"^`(?P<code>[^`]+)`$")
ANCHOR = re.compile(r"^L(?P<first>\d+)(?:-L(?P<last>\d+))?$")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # https:, mailto:, ...
FENCE = re.compile(r"^[ \t]*(?P<fence>`{3,}|~{3,})")
REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[(?P<label>(?:[^\]\\]|\\.)+)\]:[ \t]*<?(?P<target>[^\s>]+)")
ATX_HEADING = re.compile(r"^ {0,3}#{1,6}(?:[ \t]+(?P<text>.*?))?(?:[ \t]+#+)?[ \t]*$")
SETEXT_UNDERLINE = re.compile(r"^ {0,3}(?:=+|-+)[ \t]*$")
NOT_A_PARAGRAPH = re.compile(r"^[ \t]*(?:[-*+>|<]|\d+[.)])")  # list item, quote, table row, HTML
CODE_SPAN = re.compile(r"(?<!`)(?P<ticks>`+)(?!`)(?P<code>.+?)(?<!`)(?P=ticks)(?!`)")
HTML_TAG = re.compile(r"</?[A-Za-z][^>]*>")
EMPHASIS_UNDERSCORES = re.compile(r"(?<!\w)_+|_+(?!\w)")
BLANK_LINE = re.compile(r"\n[ \t]*\n")


@dataclass
class Link:
    doc: Path
    line_no: int  # 1-based line of the doc
    text: str
    target: str
    start: int  # span of the target in that doc line
    end: int


@dataclass
class Found:
    """A link found in a text: offsets into that text."""

    start: int  # the opening "["
    text_end: int  # the closing "]"
    target_start: int
    target_end: int
    end: int  # just past the closing ")"
    text: str
    target: str


def doc_files(root: Path = ROOT) -> list[Path]:
    """The markdown files that are checked."""
    return sorted((root / "docs").rglob("*.md")) + sorted(root.glob("README*.md")) + [root / "data" / "README.md"]


# --- finding the links ---------------------------------------------------------------------------------------


def without_fenced_code(text: str) -> str:
    """``text`` with every line of its fenced code blocks (fences included) emptied; the other lines, and so
    the line numbers and the columns of what is left, are unchanged."""
    lines = text.split("\n")
    fence = None
    for no, line in enumerate(lines):
        match = FENCE.match(line)
        if fence is None and match:
            fence = match.group("fence")
        elif fence is not None and closes_fence(line, fence):
            fence = None
        elif fence is None:
            continue
        lines[no] = ""
    return "\n".join(lines)


def closes_fence(line: str, fence: str) -> bool:
    """Whether ``line`` ends the code block opened by ``fence`` (the same character, at least as many)."""
    stripped = line.strip()
    return len(stripped) >= len(fence) and stripped == fence[0] * len(stripped)


def paragraph_end(text: str, i: int) -> int:
    """Where the paragraph holding ``text[i]`` ends: a link or a code span never crosses a blank line."""
    blank = BLANK_LINE.search(text, i)
    return blank.start() if blank else len(text)


def code_span_end(text: str, i: int) -> int:
    """``text[i]`` is a backtick: the index just past the code span it opens, or past its run of backticks
    when nothing closes it (then they are plain backticks)."""
    run = i
    while run < len(text) and text[run] == "`":
        run += 1
    ticks = text[i:run]
    stop = paragraph_end(text, run)
    j = text.find(ticks, run, stop)
    while j != -1:
        after = j + len(ticks)
        if after >= len(text) or text[after] != "`":
            return after
        while after < len(text) and text[after] == "`":  # a longer run does not close it
            after += 1
        j = text.find(ticks, after, stop)
    return run


def closing_bracket(text: str, i: int) -> int | None:
    """``text[i]`` is ``[``: the index of the ``]`` that balances it, skipping escaped brackets and code
    spans, or None."""
    depth, j, stop = 0, i, paragraph_end(text, i)
    while j < stop:
        char = text[j]
        if char == "\\":
            j += 2
            continue
        if char == "`":
            j = code_span_end(text, j)
            continue
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth == 0:
                return j
        j += 1
    return None


def destination(text: str, i: int) -> tuple[int, int, int] | None:
    """``text[i]`` is the ``(`` after a link's text: (start, end) of the target and the index just past the
    closing ``)``, or None when this is no link destination. The target may be in ``<...>`` and may be
    followed by a title in quotes."""
    j = skip_spaces(text, i + 1)
    if text.startswith("<", j):
        close = text.find(">", j)
        if close == -1 or "\n" in text[j:close]:
            return None
        start, end, j = j + 1, close, close + 1
    else:
        start, depth = j, 0
        while j < len(text) and not text[j].isspace():
            if text[j] == "\\":
                j += 1
            elif text[j] == "(":
                depth += 1
            elif text[j] == ")":
                if depth == 0:
                    break
                depth -= 1
            j += 1
        end = j
    j = skip_spaces(text, j)
    if j < len(text) and text[j] in "\"'(" and j > end:
        j = skip_title(text, j)
        if j is None:
            return None
        j = skip_spaces(text, j)
    if j < len(text) and text[j] == ")":
        return start, end, j + 1
    return None


def skip_spaces(text: str, j: int) -> int:
    """The first index from ``j`` that is not a space, a tab or a single line break."""
    while j < len(text) and text[j] in " \t\n" and not text.startswith("\n\n", j):
        j += 1
    return j


def skip_title(text: str, j: int) -> int | None:
    """``text[j]`` opens a link title: the index just past its closing quote (or parenthesis), or None."""
    closer = ")" if text[j] == "(" else text[j]
    close = text.find(closer, j + 1, paragraph_end(text, j))
    return None if close == -1 else close + 1


def link_at(text: str, i: int) -> Found | None:
    """The inline link (or image) whose text opens with the ``[`` at ``text[i]``, or None."""
    close = closing_bracket(text, i)
    if close is None or not text.startswith("(", close + 1):
        return None
    where = destination(text, close + 1)
    if where is None:
        return None
    start, end, after = where
    return Found(i, close, start, end, after, text[i + 1 : close], text[start:end])


def inline_links(text: str, start: int = 0, stop: int | None = None) -> list[Found]:
    """The outermost inline links and images of ``text[start:stop]``, outside code spans."""
    found, i = [], start
    stop = len(text) if stop is None else stop
    while i < stop:
        char = text[i]
        if char == "\\":
            i += 2
        elif char == "`":
            i = code_span_end(text, i)
        elif char == "[" and (link := link_at(text, i)) is not None:
            found.append(link)
            i = link.end
        else:
            i += 1
    return found


def every_link(text: str, start: int = 0, stop: int | None = None) -> list[Found]:
    """The inline links of ``text[start:stop]`` and those inside their texts (an image inside a link)."""
    found = []
    for link in inline_links(text, start, stop):
        found.append(link)
        found.extend(every_link(text, link.start + 1, link.text_end))
    return found


def reference_definitions(text: str) -> list[Found]:
    """The reference definitions ``[label]: target`` of ``text``."""
    found, offset = [], 0
    for line in text.split("\n"):
        match = REFERENCE_DEFINITION.match(line)
        if match:
            start, end = offset + match.start("target"), offset + match.end("target")
            found.append(Found(offset, offset, start, end, end, "", match.group("target")))
        offset += len(line) + 1
    return found


def is_relative(target: str) -> bool:
    """Whether ``target`` points into the repository (not a web link, not an empty target)."""
    return bool(target) and not SCHEME.match(target) and not target.startswith("//")


def links_in(doc: Path) -> list[Link]:
    """The relative links of the markdown file ``doc``, in order."""
    text = without_fenced_code(doc.read_text(encoding="utf-8"))
    found = sorted(every_link(text) + reference_definitions(text), key=lambda link: link.target_start)
    links = []
    for link in found:
        if not is_relative(link.target):
            continue
        line_start = text.rfind("\n", 0, link.target_start) + 1
        line_no = text.count("\n", 0, link.target_start) + 1
        start, end = link.target_start - line_start, link.target_end - line_start
        links.append(Link(doc, line_no, link.text, link.target, start, end))
    return links


# --- headings ----------------------------------------------------------------------------------------------


def heading_texts(text: str) -> list[str]:
    """The texts of the headings of a markdown text, in order: ``# Title`` and setext (``Title`` underlined
    with ``===`` or ``---``) headings outside fenced code."""
    headings, paragraph = [], []
    for line in without_fenced_code(text).split("\n"):
        atx = ATX_HEADING.match(line)
        if atx:
            headings.append(atx.group("text") or "")
            paragraph = []
        elif SETEXT_UNDERLINE.match(line) and paragraph and not NOT_A_PARAGRAPH.match(paragraph[0]):
            headings.append(" ".join(part.strip() for part in paragraph))
            paragraph = []
        elif line.strip():
            paragraph.append(line)
        else:
            paragraph = []
    return headings


def plain_text(markdown: str) -> str:
    """The text a heading shows: code spans keep their content; outside them, links and images become
    their text and HTML tags and emphasis underscores go (``*`` and the rest go with the punctuation)."""
    pieces, pos = [], 0
    for span in CODE_SPAN.finditer(markdown):
        pieces.append(plain_prose(markdown[pos : span.start()]))
        code = span.group("code")
        if code.startswith(" ") and code.endswith(" ") and code.strip():
            code = code[1:-1]
        pieces.append(code)
        pos = span.end()
    pieces.append(plain_prose(markdown[pos:]))
    return "".join(pieces)


def plain_prose(markdown: str) -> str:
    """``plain_text`` of markdown without code spans."""
    pieces, pos = [], 0
    for link in inline_links(markdown):
        pieces.append(markdown[pos : link.start])
        pieces.append(plain_text(link.text))
        pos = link.end
    pieces.append(markdown[pos:])
    prose = HTML_TAG.sub("", "".join(pieces))
    return EMPHASIS_UNDERSCORES.sub("", prose)


def keeps(char: str) -> bool:
    """Whether GitHub keeps ``char`` in a heading's anchor: letters (Chinese ones too), marks, digits,
    ``_`` (connector punctuation) and ``-``."""
    category = unicodedata.category(char)
    return char == "-" or category[0] in "LM" or category in ("Nd", "Nl", "Pc")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text lower-cased, without punctuation (except ``-`` and ``_``),
    each space a ``-``. ``Comparing variants`` -> ``comparing-variants``."""
    kept = []
    for char in plain_text(heading).strip().lower():
        if char == " ":
            kept.append("-")
        elif keeps(char):
            kept.append(char)
    return "".join(kept)


def heading_anchors(text: str) -> list[str]:
    """The anchors of the headings of a markdown text, in order; the second heading with the same anchor
    gets ``-1``, the third ``-2`` (as GitHub numbers them)."""
    seen: dict[str, int] = {}
    for heading in heading_texts(text):
        base = anchor = slug(heading)
        while anchor in seen:
            seen[base] += 1
            anchor = f"{base}-{seen[base]}"
        seen[anchor] = 0
    return list(seen)


# --- checking ----------------------------------------------------------------------------------------------


def resolve(link: Link) -> tuple[Path, str]:
    """The file a link points to (the doc itself for ``#anchor``) and its anchor, both URL-decoded."""
    path, _, anchor = link.target.partition("#")
    path = unquote(path.partition("?")[0])
    if not path:
        return link.doc.resolve(), unquote(anchor)
    if path.startswith("/"):  # GitHub reads it from the repository's root
        return (ROOT / path.lstrip("/")).resolve(), unquote(anchor)
    return (link.doc.parent / path).resolve(), unquote(anchor)


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
    if not file.is_file():
        return f"{link.target}: {file.name} is a folder, it has no anchors"
    match = ANCHOR.match(anchor)
    if match is not None:
        return line_anchor_problem(link, file, match)
    if file.suffix.lower() in (".md", ".markdown"):
        return heading_anchor_problem(link, file, anchor)
    return None  # an anchor into another kind of file (an id in an HTML page): not checked


def line_anchor_problem(link: Link, file: Path, match: re.Match) -> str | None:
    """Why the line anchor ``match`` of ``link`` is wrong (out of the file, or its snippet not there), or
    None."""
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


def heading_anchor_problem(link: Link, file: Path, anchor: str) -> str | None:
    """Why ``anchor`` names no heading of the markdown ``file``, or None."""
    anchors = heading_anchors(file.read_text(encoding="utf-8"))
    if anchor in anchors:
        return None
    close = difflib.get_close_matches(anchor, anchors, n=1)
    hint = f"; did you mean #{close[0]}?" if close else ""
    return f"{link.target}: {file.name} has no heading #{anchor}{hint}"


def fix(link: Link) -> str | None:
    """The corrected target of a code link whose snippet moved (nearest occurrence), else None."""
    file, anchor = resolve(link)
    match, code = ANCHOR.match(anchor or ""), CODE_TEXT.match(link.text.strip())
    if not file.is_file() or match is None or code is None:
        return None
    first = int(match.group("first"))
    span = int(match.group("last") or first) - first
    where = snippet_lines(file, code.group("code"))
    if not where or first in where:
        return None
    best = min(where, key=lambda no: abs(no - first))
    path = link.target.partition("#")[0]
    return f"{path}#L{best}" + (f"-L{best + span}" if span else "")


def fix_doc(doc: Path) -> None:
    """Move the moved code links of ``doc`` in place (the file is written only when something changed)."""
    text_lines = doc.read_text(encoding="utf-8").splitlines(keepends=True)
    changed = False
    for link in reversed(links_in(doc)):  # right to left, so earlier spans stay valid
        new = fix(link)
        if new:
            line = text_lines[link.line_no - 1]
            text_lines[link.line_no - 1] = line[: link.start] + new + line[link.end :]
            changed = True
            print(f"{display(doc)}:{link.line_no}: {link.target} -> {new}")
    if changed:
        doc.write_text("".join(text_lines), encoding="utf-8")


def display(doc: Path) -> str:
    """``doc`` relative to the repository when it is inside it."""
    try:
        return str(doc.resolve().relative_to(ROOT))
    except ValueError:
        return str(doc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fix", action="store_true", help="rewrite moved code links in place")
    parser.add_argument("files", nargs="*", type=Path, help="markdown files to check (default: all the docs)")
    args = parser.parse_args()
    broken = 0
    for doc in args.files or doc_files():
        if not doc.exists():
            continue
        if args.fix:
            fix_doc(doc)
        for link in links_in(doc):
            reason = problems(link)
            if reason:
                broken += 1
                print(f"{display(doc)}:{link.line_no}: {reason}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
