"""README.zh-CN.md is README.md in Chinese: the two must not drift apart.

What "in sync" means here, checked below:

* the shell commands are the same, in the same order. A command is taken from a fenced code block
  marked ``bash`` / ``sh`` / ``shell`` / ``console``: every non-empty line, with comments removed (a line
  whose first non-blank character is ``#``, and a trailing comment ``cmd  # ...``: as in the shell, a ``#``
  after whitespace and outside quotes, so ``cmd # ...`` with one space counts too and ``echo "a # b"`` is
  kept whole), and lines ending in a backslash joined to the next one. Comments may be translated;
  commands may not;
* the markdown tables hold the same numbers: table by table and row by row, the multiset of numbers
  (``35.37``, ``3,200``, ``0.533``, ``1.17``; written exactly alike, thousands separators included) is equal,
  so a measured result cannot change in one file only. The figures live in one table, under "Results";
  numbers in prose are not compared (prose is rephrased when translated);
* the headings have the same levels in the same order (same sections, same order);
* each file links to the other one at the top;
* the set-up block still holds exactly the two set-up commands, ``make train`` and ``make test``;
* README.md stays a user guide: at most 300 lines, and no path that only this project's developers have.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ENGLISH = REPO_ROOT / "README.md"
CHINESE = REPO_ROOT / "README.zh-CN.md"

SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
# A number is a run of digits with optional thousands groups and decimals, not glued to an ASCII word
# character on either side (so `fp32`, `multi30k`, `test_2016_flickr`, `step_NNN` are not numbers), while
# a number right before a Chinese character (`20 分钟` or `20分钟`) still is.
NUMBER = re.compile(r"(?<![A-Za-z0-9_.,])\d+(?:,\d{3})*(?:\.\d+)?(?![A-Za-z0-9_])")


# --------------------------------------------------------------------------------------------------------
# Extraction


def fenced_blocks(text: str) -> list[tuple[str, list[str]]]:
    """(info string, lines) of every fenced code block, in document order."""
    blocks: list[tuple[str, list[str]]] = []
    info: str | None = None
    lines: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            if info is None:
                info, lines = stripped[3:].strip().lower(), []
            else:
                blocks.append((info, lines))
                info = None
            continue
        if info is not None:
            lines.append(line)
    assert info is None, "a fenced code block is never closed"
    return blocks


def strip_trailing_comment(line: str) -> str:
    """The line without a shell comment: a `#` that follows whitespace and is not inside quotes."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def commands_in_block(lines: list[str]) -> list[str]:
    """The commands of one shell block: comments dropped, backslash continuations joined."""
    commands: list[str] = []
    pending = ""
    for raw in lines:
        if raw.strip().startswith("#"):
            continue
        line = strip_trailing_comment(raw).strip()
        if not line:
            continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        commands.append(pending + line)
        pending = ""
    if pending:
        commands.append(pending.rstrip())
    return commands


def shell_commands(text: str) -> list[str]:
    """Every command of every shell code block, in document order."""
    return [
        command
        for info, lines in fenced_blocks(text)
        if info.split()[:1] and info.split()[0] in SHELL_LANGUAGES
        for command in commands_in_block(lines)
    ]


def outside_code(text: str) -> list[str]:
    """The lines that are not inside a fenced code block (nor fences themselves)."""
    kept, in_code = [], False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            in_code = not in_code
            continue
        if not in_code:
            kept.append(line)
    return kept


def tables(text: str) -> list[list[str]]:
    """Every markdown table as its rows (header included, the |---| separator left out)."""
    found: list[list[str]] = []
    current: list[str] = []
    for line in outside_code(text) + [""]:
        stripped = line.strip()
        if stripped.startswith("|"):
            if not re.fullmatch(r"\|[\s:|-]*", stripped):
                current.append(stripped)
        elif current:
            found.append(current)
            current = []
    return found


def numbers(row: str) -> Counter[str]:
    return Counter(NUMBER.findall(row))


def section(text: str, heading: str) -> str:
    """The lines under the level-2 heading ``## <heading>``, up to the next level-2 heading."""
    lines = text.splitlines()
    start = lines.index(f"## {heading}") + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "\n".join(lines[start:end])


def heading_levels(text: str) -> list[int]:
    return [len(m.group(1)) for line in outside_code(text) if (m := re.match(r"(#{1,6})\s", line))]


# --------------------------------------------------------------------------------------------------------
# The checks


@pytest.fixture(scope="module")
def english() -> str:
    return ENGLISH.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def chinese() -> str:
    assert CHINESE.is_file(), f"{CHINESE.name} is missing: the Chinese README must sit next to README.md"
    return CHINESE.read_text(encoding="utf-8")


def test_both_readmes_hold_the_same_commands_in_the_same_order(english, chinese):
    en, zh = shell_commands(english), shell_commands(chinese)
    assert en, "no commands found in README.md: the extraction is broken"
    missing_in_zh = Counter(en) - Counter(zh)
    missing_in_en = Counter(zh) - Counter(en)
    problems = []
    if missing_in_zh:
        problems.append("in README.md but not in README.zh-CN.md:\n" + "\n".join(f"  {c}" for c in missing_in_zh))
    if missing_in_en:
        problems.append("in README.zh-CN.md but not in README.md:\n" + "\n".join(f"  {c}" for c in missing_in_en))
    assert not problems, "the commands of the two READMEs differ (sync README.zh-CN.md):\n" + "\n".join(problems)
    first = next((i for i, (a, b) in enumerate(zip(en, zh)) if a != b), None)
    assert en == zh, (
        f"same commands, different order: command {first + 1} is\n  {en[first]}\nin README.md but\n  {zh[first]}\n"
        "in README.zh-CN.md (keep the sections and blocks in the order of README.md)"
    )


def test_set_up_is_still_exactly_two_commands(english, chinese):
    for name, text in (("README.md", english), ("README.zh-CN.md", chinese)):
        first_block = next(lines for info, lines in fenced_blocks(text) if info in SHELL_LANGUAGES)
        assert commands_in_block(first_block) == ["make train", "make test"], (
            f"the set-up block of {name} must hold exactly `make train` and `make test`, "
            f"found {commands_in_block(first_block)}"
        )


def test_tables_hold_the_same_numbers(english, chinese):
    en, zh = tables(english), tables(chinese)
    assert len(en) >= 3, "too few tables found in README.md: the extraction is broken"
    assert len(en) == len(zh), (
        f"README.md has {len(en)} tables, README.zh-CN.md {len(zh)}; headers in README.md:\n"
        + "\n".join(f"  {t[0]}" for t in en)
    )
    problems = []
    for t, (en_rows, zh_rows) in enumerate(zip(en, zh), start=1):
        if len(en_rows) != len(zh_rows):
            problems.append(f"table {t} ({en_rows[0]}): {len(en_rows)} rows in README.md, {len(zh_rows)} in zh-CN")
            continue
        for en_row, zh_row in zip(en_rows, zh_rows):
            en_numbers, zh_numbers = numbers(en_row), numbers(zh_row)
            if en_numbers != zh_numbers:
                problems.append(
                    f"table {t}, row\n    {en_row}\n    {zh_row}\n"
                    f"  only in README.md: {sorted((en_numbers - zh_numbers).elements())}, "
                    f"only in README.zh-CN.md: {sorted((zh_numbers - en_numbers).elements())}"
                )
    assert not problems, "the numbers in the tables differ (a result changed in one file only):\n" + "\n".join(
        problems
    )


def test_the_results_are_one_table_of_figures_in_each_readme(english, chinese):
    for name, text, heading in (("README.md", english, "Results"), ("README.zh-CN.md", chinese, "结果")):
        assert f"## {heading}" in text.splitlines(), f"{name} has no '## {heading}' section"
        found = tables(section(text, heading))
        assert len(found) == 1, f"the '{heading}' section of {name} holds {len(found)} tables; the figures go in one"
        assert all(numbers(row) for row in found[0][1:]), f"a row of {name}'s results table holds no figure"


def test_the_readme_is_a_user_guide(english):
    lines = english.splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines: measurements and details go to docs/"
    assert "../shared" not in english, "README.md names ../shared, which users do not have (say S2S_DATA_DIR)"


def test_same_sections_in_the_same_order(english, chinese):
    en, zh = heading_levels(english), heading_levels(chinese)
    assert en == zh, f"heading levels differ: README.md {en}, README.zh-CN.md {zh}"


def test_each_readme_links_to_the_other_at_the_top(english, chinese):
    assert "(README.zh-CN.md)" in "\n".join(english.splitlines()[:5]), "README.md must link to README.zh-CN.md"
    assert "(README.md)" in "\n".join(chinese.splitlines()[:5]), "README.zh-CN.md must link back to README.md"


# --------------------------------------------------------------------------------------------------------
# The extraction itself


def test_extraction_strips_comments_and_joins_continued_lines():
    block = [
        "# a whole-line comment",
        "make train   # trailing comment",
        "             # continued comment",
        "",
        "s2s-train data=parallel \\",
        "          data.src_lang=en     # any PREFIX.en",
        "s2s-train data=fra_eng trainer.max_minutes=10 # one space is enough",
        'echo "a # b" | s2s-translate RUN  # LINE ||| text',
    ]
    assert commands_in_block(block) == [
        "make train",
        "s2s-train data=parallel data.src_lang=en",
        "s2s-train data=fra_eng trainer.max_minutes=10",
        'echo "a # b" | s2s-translate RUN',
    ]


def test_numbers_are_taken_whole_and_identifiers_are_not_numbers():
    row = "| `multi30k_en_fr`, fp32, 20 分钟, 20分钟 | 3,244 ± 27 | 35.37 (beam 5: 37.18) | 1.17× | 33% of 319 |"
    assert numbers(row) == Counter(["20", "20", "3,244", "27", "35.37", "5", "37.18", "1.17", "33", "319"])
