"""The explorer's local web server: the page and a small JSON API, from the standard library's ``http.server``.

    GET  /                      the page (``page/explorer.html`` with its CSS and JavaScript inlined)
    GET  /api/info              the runs (name, attention, decoder, heads, step checkpoints) and the gold set
    POST /api/translate         {"sentence", "beam", "run"?, "checkpoint"?} -> {"views": [view per run]}
    GET  /api/gold?index=I      gold sentence I (0-based) with every run's links over its word attention
    GET  /api/gold/scores       the gold set's AER per run and the diagonal baseline's

Bad input is answered with HTTP 400 and ``{"error": "what was wrong"}``, which the page shows; an unexpected
failure with HTTP 500 and a one-line message (the traceback goes to the server's log, never to the page).
The server only reads the run directories.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from .page import page_html
from .views import ExplorerError, ExplorerRun, GoldSet

log = logging.getLogger(__name__)

#: the largest request body accepted (a sentence and a few settings)
MAX_BODY = 64 * 1024


class Explorer:
    """The runs and the optional gold set the server answers about."""

    def __init__(self, runs: list[ExplorerRun], gold: GoldSet | None = None, default_beam: int = 5) -> None:
        self.runs, self.gold, self.default_beam = runs, gold, default_beam

    def info(self) -> dict:
        gold = None
        if self.gold is not None:
            gold = {"sentences": len(self.gold), "files": self.gold.paths}
        return {"runs": [run.info() for run in self.runs], "gold": gold, "default_beam": self.default_beam}

    def translate(self, request: dict) -> dict:
        sentence, beam = request.get("sentence"), request.get("beam", 1)
        runs = self.runs
        if request.get("run") is not None:
            runs = [self.run(request["run"])]
        return {"views": [run.translate(sentence, beam, request.get("checkpoint")) for run in runs]}

    def run(self, index: Any) -> ExplorerRun:
        if not isinstance(index, int) or not 0 <= index < len(self.runs):
            raise ExplorerError(f"no run {index!r}: runs are numbered 0 to {len(self.runs) - 1}")
        return self.runs[index]

    def gold_scores(self) -> dict:
        gold = self._gold()
        return {"runs": [dict(gold.scores(run), run=run.index) for run in self.runs]}

    def gold_sentence(self, index: Any) -> dict:
        return self._gold().sentence(index, self.runs)

    def _gold(self) -> GoldSet:
        if self.gold is None:
            raise ExplorerError("no gold alignments: start s2s-explore with --gold SRC TGT LINKS")
        return self.gold


def make_handler(explorer: Explorer) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to ``explorer``."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "s2s-explore"

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            url = urlparse(self.path)
            if url.path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, page_html().encode("utf-8"), "text/html; charset=utf-8")
            elif url.path == "/api/info":
                self._answer(explorer.info)
            elif url.path == "/api/gold/scores":
                self._answer(explorer.gold_scores)
            elif url.path == "/api/gold":
                query = parse_qs(url.query)
                self._answer(lambda: explorer.gold_sentence(_integer(query.get("index", [""])[0], "index")))
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {url.path}"})

        def do_POST(self) -> None:  # noqa: N802
            url = urlparse(self.path)
            if url.path != "/api/translate":
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {url.path}"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._json(HTTPStatus.BAD_REQUEST, {"error": f"request too large ({length} bytes)"})
                return
            try:
                request = json.loads(self.rfile.read(length) or b"{}")
                if not isinstance(request, dict):
                    raise ValueError("not an object")
            except ValueError:
                self._json(HTTPStatus.BAD_REQUEST, {"error": "the request is not a JSON object"})
                return
            self._answer(lambda: explorer.translate(request))

        def _answer(self, compute) -> None:
            try:
                self._json(HTTPStatus.OK, compute())
            except ExplorerError as error:
                self._json(HTTPStatus.BAD_REQUEST, {"error": str(error)})
            except Exception as error:  # a bug: the page gets one line, the log the traceback
                log.exception("s2s-explore: %s failed", self.path)
                self._json(HTTPStatus.INTERNAL_SERVER_ERROR,
                           {"error": f"internal error ({type(error).__name__}: {str(error)[:200]}); see the log"})

        def _json(self, status: HTTPStatus, payload: dict) -> None:
            self._send(status, json.dumps(payload, ensure_ascii=False).encode("utf-8"), "application/json")

        def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's name)
            log.debug("%s - %s", self.address_string(), format % args)

    return Handler


def _integer(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ExplorerError(f"{name} must be a whole number, got {text!r}") from None


def make_server(explorer: Explorer, host: str = "127.0.0.1", port: int = 8600) -> ThreadingHTTPServer:
    """A server for ``explorer`` bound to ``host:port`` (port 0: any free port); ``serve_forever()`` runs it."""
    server = ThreadingHTTPServer((host, port), make_handler(explorer))
    server.daemon_threads = True
    return server
