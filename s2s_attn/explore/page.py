"""The explorer's page as one HTML document: ``static/explorer.html`` with its stylesheet and script inlined, and,
for an exported file, the precomputed answers embedded (the script then reads them instead of asking a server)."""

from __future__ import annotations

import json
from importlib import resources

STATIC = "static"


def _read(name: str) -> str:
    return resources.files(__package__).joinpath(STATIC, name).read_text(encoding="utf-8")


def _script_safe(text: str) -> str:
    """JSON inside a <script> element: no ``</`` that would end the element early."""
    return text.replace("</", "<\\/")


def page_html(data: dict | None = None) -> str:
    """The page; with ``data`` (an export: ``{"info", "answers"}``), a static page that needs no server."""
    html = _read("explorer.html").replace("/*STYLE*/", _read("explorer.css"), 1)
    html = html.replace("/*SCRIPT*/", _read("explorer.js"), 1)
    embedded = "null" if data is None else _script_safe(json.dumps(data, ensure_ascii=False, separators=(",", ":")))
    return html.replace("/*DATA*/null", embedded, 1)  # the first: the placeholder comes before the script
