"""``s2s-explore``'s server and export on two trained toy runs: the page's answers are s2s-translate's numbers
(attention, per-head weights, beam output), the beam's steps end in its n-best list, the slider's checkpoints
give their own models' attention, the gold view's AER is s2s-align-eval's, bad input gets one clear message, the
run directories are never written, and an exported file holds the same matrices. The page in a real browser is
tested in tests/browser/."""

from __future__ import annotations

import json
import re
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from s2s_attn.cli.align_eval import main as align_eval
from s2s_attn.cli.explore import main as explore
from s2s_attn.explore.server import Explorer, make_server
from s2s_attn.explore.views import ExplorerRun, GoldSet

from .explore_runs import assert_same_matrix, translate_attention


@pytest.fixture(scope="module")
def runs(explore_runs):
    return explore_runs


def snapshot(directory: Path) -> dict:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(directory.rglob("*"))}


@pytest.fixture(scope="module")
def server(runs):
    """The explorer's server on a free port, in a thread: -> its base URL."""
    before = [snapshot(runs.bahdanau), snapshot(runs.multihead)]
    explorer = Explorer([ExplorerRun(runs.bahdanau, 0), ExplorerRun(runs.multihead, 1)], GoldSet(*runs.gold))
    httpd = make_server(explorer, "127.0.0.1", 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    assert [snapshot(runs.bahdanau), snapshot(runs.multihead)] == before  # only read


def call(base: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_page_is_served_with_everything_inline(server):
    with urllib.request.urlopen(server + "/", timeout=30) as response:
        html = response.read().decode()
    assert "<script>window.S2S_EXPORT = null;</script>" in html
    assert "function heatmap" in html and "table.heatmap" in html
    assert not re.search(r"(src|href)=\"https?://", html)  # nothing from the network: works offline


def test_info_lists_the_runs_and_their_checkpoints(server):
    status, info = call(server, "/api/info")
    assert status == 200
    bahdanau, multihead = info["runs"]
    assert (bahdanau["attention"], multihead["attention"], multihead["heads"]) == ("bahdanau", "multihead", 2)
    assert bahdanau["checkpoints"] == [100, 200, 300, 400] and info["gold"]["sentences"] == 12


def test_a_sentence_gets_s2s_translates_translation_and_attention_from_each_run(server, runs, tmp_path):
    sentence = runs.sentences[0]
    for index, run_dir in enumerate([runs.bahdanau, runs.multihead]):
        status, answer = call(server, "/api/translate", {"sentence": sentence, "beam": 1, "run": index})
        assert status == 200
        view = answer["views"][0]
        expected = translate_attention(run_dir, sentence, tmp_path)
        assert view["translation"] == expected["translation"]
        assert view["src_tokens"] == expected["src_tokens"] and view["tgt_tokens"] == expected["tgt_tokens"]
        assert_same_matrix(view["attention"], expected["attention"])
    heads = view["heads"]  # the multi-head run: each head, and the mean is theirs
    assert len(heads) == 2
    mean = [[(a + b) / 2 for a, b in zip(r1, r2)] for r1, r2 in zip(*heads)]
    assert_same_matrix(mean, view["attention"], 1e-5)


def test_the_beam_view_gives_s2s_translates_beam_output_and_every_step(server, runs, tmp_path):
    sentence = runs.sentences[1]
    status, answer = call(server, "/api/translate", {"sentence": sentence, "beam": 3, "run": 0})
    assert status == 200
    view = answer["views"][0]
    expected = translate_attention(runs.bahdanau, sentence, tmp_path, "--beam", "3")
    assert view["translation"] == expected["translation"]
    assert_same_matrix(view["attention"], expected["attention"])
    beam = view["beam"]
    assert beam["k"] == 3 and beam["steps"][0]["step"] == 1
    assert len(beam["steps"][0]["live"]) <= 3 and all(len(step["live"]) <= 3 for step in beam["steps"])
    assert beam["nbest"][0]["text"] == view["translation"]
    finished = [h for step in beam["steps"] for h in step["finished"]]
    assert any(h["text"] == beam["nbest"][0]["text"] and h["score"] == beam["nbest"][0]["score"] for h in finished)
    for step in beam["steps"]:  # a hypothesis' attention has a row per token it holds
        for hyp in step["live"]:
            assert len(hyp["attention"]) == step["step"] == len(hyp["tokens"])
            assert len(hyp["attention"][0]) == len(view["src_tokens"])


def test_the_slider_shows_each_checkpoints_own_attention(server, runs, tmp_path):
    sentence = runs.sentences[2]
    checkpoint = runs.bahdanau / "checkpoints" / "step_00000100.pt"
    views = {}
    for step in (100, 400):
        status, answer = call(server, "/api/translate", {"sentence": sentence, "beam": 1, "run": 0, "checkpoint": step})
        assert status == 200
        views[step] = answer["views"][0]
    expected = translate_attention(checkpoint, sentence, tmp_path)
    assert views[100]["translation"] == expected["translation"]
    assert_same_matrix(views[100]["attention"], expected["attention"])
    assert views[100]["attention"] != views[400]["attention"]


def test_the_gold_view_gives_s2s_align_evals_aer_and_marks_each_link(server, runs, capsys):
    status, scores = call(server, "/api/gold/scores")
    assert status == 200
    src, tgt, links = runs.gold
    assert align_eval([str(runs.bahdanau), "--src", str(src), "--tgt", str(tgt), "--gold", str(links),
                       "--no-aligner"]) == 0
    printed = capsys.readouterr().out
    model_aer, diagonal_aer = (float(x) for x in re.findall(r"AER (\d\.\d+)", printed))
    shown = scores["runs"][0]
    assert (round(shown["aer"], 3), round(shown["diagonal_aer"], 3)) == (model_aer, diagonal_aer)
    status, sentence = call(server, "/api/gold?index=3")
    assert status == 200
    words = len(sentence["src_words"])
    assert sentence["sure"] == sorted([s, words - 1 - s] for s in range(words))  # the reversal's anti-diagonal
    for view in sentence["runs"]:
        assert len(view["attention"]) == len(sentence["tgt_words"]) and len(view["links"]) == len(sentence["tgt_words"])
        for link in view["links"]:
            assert link["hit"] == ([link["source"], link["target"]] in sentence["sure"])


@pytest.mark.parametrize("body, message", [
    ({"sentence": "   ", "beam": 1}, "the text box is empty"),
    ({"sentence": "a b", "beam": 40}, "beam width must be a whole number from 1 to 16"),
    ({"sentence": "a b", "beam": 1, "run": 7}, "no run 7"),
    ({"sentence": "a b", "beam": 1, "run": 0, "checkpoint": 15}, "has no step checkpoint 15"),
])
def test_bad_input_gets_one_clear_message(server, body, message):
    status, answer = call(server, "/api/translate", body)
    assert status == 400 and message in answer["error"] and "Traceback" not in answer["error"]


def test_an_over_long_sentence_is_truncated_with_a_note(server):
    status, answer = call(server, "/api/translate", {"sentence": " ".join(["a"] * 80), "beam": 1, "run": 0})
    assert status == 200
    view = answer["views"][0]
    assert "truncated to the first 50" in view["note"] and len(view["src_tokens"]) == 51  # and </s>


def test_a_directory_that_is_not_a_run_is_refused_in_one_line(tmp_path, capsys):
    assert explore([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is not a run directory of s2s-train" in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_the_export_holds_the_same_matrices_for_each_sentence(runs, tmp_path, capsys):
    sentences = tmp_path / "sentences.txt"
    sentences.write_text(f"{runs.sentences[0]}\n\n{runs.sentences[4]}\n")
    out = tmp_path / "explore.html"
    assert explore([str(runs.bahdanau), str(runs.multihead), "--export", str(out), "--input", str(sentences),
                    "--beam", "3"]) == 0
    assert "skipped 1 empty line" in capsys.readouterr().err
    html = out.read_text()
    data = json.loads(re.search(r"window\.S2S_EXPORT = (.*?);</script>", html, re.S).group(1).replace("<\\/", "</"))
    assert data["info"]["sentences"] == [runs.sentences[0], runs.sentences[4]] and data["info"]["beams"] == [1, 3]
    view = data["answers"]["\u0000".join([runs.sentences[4], "1", "0", "best"])]
    expected = translate_attention(runs.bahdanau, runs.sentences[4], tmp_path)
    assert_same_matrix(view["attention"], expected["attention"])
    assert "\u0000".join([runs.sentences[0], "3", "1", "best"]) in data["answers"]
    assert "\u0000".join([runs.sentences[0], "1", "0", "200"]) in data["answers"]  # the slider's checkpoints
