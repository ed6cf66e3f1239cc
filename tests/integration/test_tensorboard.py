"""Attention visualisation end to end on the toy task: a tiny multi-head model trained for 60 steps
(evaluations at 30 and 60) writes attention images and statistics that TensorBoard's own reader and
its HTTP server find; its checkpoint feeds ``s2s-plot`` and ``s2s-translate --attention``."""

from __future__ import annotations

import json
import math
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from s2s_attn.cli import config_dir

HEADS = 2
IMAGES = 2
STEPS = (30, 60)
OVERRIDES = [
    "data=toy", "data.train_size=1500", "data.valid_size=40", "data.test_size=20",
    "model.emb_size=16", "model.encoder_hidden=16", "model.decoder_hidden=32", "model.output_size=16",
    "model.dropout=0.0", "attention=multihead", "attention.size=16", f"attention.heads={HEADS}",
    "trainer.batch_size=32", "trainer.batch_tokens=null", "trainer.lr=0.003", "trainer.max_steps=60",
    "trainer.max_minutes=null", "trainer.eval_every=30", "trainer.log_every=10", "trainer.patience=0",
    "trainer.device=cpu", f"logger.attention_images={IMAGES}",
]
IMAGE_TAGS = [f"attention/valid_{k}" for k in range(IMAGES)] + [
    f"attention/valid_{k}/head_{h}" for k in range(IMAGES) for h in range(HEADS)
]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> Path:
    from s2s_attn.training.trainer import train

    root = tmp_path_factory.mktemp("attention")
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=[*OVERRIDES, f"data.cache_dir={root}/cache"])
    train(cfg, root / "run")
    return root / "run"


def test_event_files_hold_attention_images_text_and_statistics(toy_run):
    from tensorboard.backend.event_processing.event_accumulator import IMAGES as IMAGE_KIND
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(toy_run / "tensorboard"), size_guidance={IMAGE_KIND: 0, "scalars": 0}).Reload()
    tags = events.Tags()
    assert sorted(tags["images"]) == sorted(IMAGE_TAGS)
    for tag in IMAGE_TAGS:
        images = events.Images(tag)
        assert [image.step for image in images] == list(STEPS)  # one per evaluation: the slider
        assert images[0].width > 100 and images[0].height > 100
        assert images[0].encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("attention/entropy", "attention/diagonal_share"):
        values = events.Scalars(name)
        assert [v.step for v in values] == list(STEPS)
        assert all(math.isfinite(v.value) and v.value >= 0 for v in values)
    assert all(v.value <= 1 for v in events.Scalars("attention/diagonal_share"))
    assert "attention/valid_0/text_summary" in tags["tensors"]  # add_text: a tensor, tag + "/text_summary"
    history = json.loads((toy_run / "results.json").read_text())["history"]
    assert all(entry["attention_entropy"] is not None for entry in history)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tensorboard_command() -> list[str]:
    candidate = Path(sys.executable).parent / "tensorboard"
    found = str(candidate) if candidate.exists() else shutil.which("tensorboard")
    return [found] if found else [sys.executable, "-m", "tensorboard.main"]


def test_the_tensorboard_server_lists_the_image_tags(toy_run):
    port = free_port()
    server = subprocess.Popen(
        [*tensorboard_command(), "--logdir", str(toy_run / "tensorboard"), "--host", "127.0.0.1",
         "--port", str(port), "--load_fast", "false", "--reload_interval", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}/data/plugin/images/tags"
    tags, last_error = None, None
    try:
        deadline = time.time() + 40
        while time.time() < deadline:
            if server.poll() is not None:
                pytest.fail(f"tensorboard exited with {server.returncode}: {server.stderr.read().decode()[-1500:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    answer = json.loads(response.read())
                found = {tag for run in answer.values() for tag in run}
                if set(IMAGE_TAGS) <= found:
                    tags = found
                    break
                last_error = f"tags so far: {sorted(found)}"
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError) as error:
                last_error = repr(error)
            time.sleep(0.5)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert tags is not None, f"no image tags from {url} within 40 s ({last_error})"


def test_s2s_plot_writes_a_png_and_an_html_page_per_sentence(toy_run, tmp_path, capsys, monkeypatch):
    from s2s_attn.cli.plot import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "more.txt").write_text("d e f g\n\n", encoding="utf-8")
    assert main([str(toy_run), "a b c", "--input", "more.txt"]) == 0
    out = capsys.readouterr().out
    for n in (1, 2):
        png, page = tmp_path / f"attention_{n}.png", tmp_path / f"attention_{n}.html"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        html = page.read_text(encoding="utf-8")
        assert 'title="▁a → ' in html or 'title="▁d → ' in html
        assert "http" not in html and "<script" not in html
        assert html.count("<table") == 1 + HEADS  # the mean, then each head
        assert str(png.name) in out
    assert "a b c" in out and "->" in out

    assert main([str(toy_run), "x y", "--out", str(tmp_path / "sub")]) == 0
    assert (tmp_path / "sub" / "attention_1.png").is_file()


def test_s2s_plot_fails_clearly_on_a_bad_checkpoint_or_no_input(toy_run, tmp_path, capsys):
    from s2s_attn.cli.plot import main

    assert main([str(tmp_path / "nowhere"), "a b"]) == 2
    assert "s2s-plot: error:" in capsys.readouterr().err
    assert main([str(toy_run)]) == 2
    assert "nothing to plot" in capsys.readouterr().err
    (tmp_path / "empty.txt").write_text("\n  \n")
    assert main([str(toy_run), "--input", str(tmp_path / "empty.txt")]) == 2
    not_a_checkpoint = tmp_path / "bad.pt"
    not_a_checkpoint.write_bytes(b"not a checkpoint")
    assert main([str(not_a_checkpoint), "a b"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_s2s_translate_writes_attention_as_json_lines(toy_run, tmp_path, capsys):
    from s2s_attn.cli.translate import main

    (tmp_path / "in.txt").write_text("a b c\n\nd e f g h\n", encoding="utf-8")
    out, attention = tmp_path / "out.txt", tmp_path / "attention.jsonl"
    assert main([str(toy_run), "-i", str(tmp_path / "in.txt"), "-o", str(out), "--attention", str(attention)]) == 0
    translations = out.read_text(encoding="utf-8").split("\n")
    records = [json.loads(line) for line in attention.read_text(encoding="utf-8").splitlines()]
    assert [r["line"] for r in records] == [1, 2, 3]
    assert records[1] == {"line": 2, "source": "", "translation": "", "src_tokens": [], "tgt_tokens": [],
                          "attention": []}
    for record, translation in zip(records, translations):
        assert record["translation"] == translation
        if not record["source"]:
            continue
        assert record["src_tokens"][-1] == "</s>" and record["src_tokens"][0] == "▁" + record["source"][0]
        assert len(record["attention"]) == len(record["tgt_tokens"])
        for row in record["attention"]:
            assert len(row) == len(record["src_tokens"])
            assert sum(row) == pytest.approx(1.0, abs=1e-3)
            assert all(round(v, 4) == v for v in row)
    # the same translations without --attention
    assert main([str(toy_run), "-i", str(tmp_path / "in.txt"), "-o", str(tmp_path / "plain.txt")]) == 0
    assert (tmp_path / "plain.txt").read_text(encoding="utf-8") == out.read_text(encoding="utf-8")
