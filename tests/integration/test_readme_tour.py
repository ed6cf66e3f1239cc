"""The README's tour runs as written: every line of its ```bash blocks that translates, evaluates or plots with the
tour's run (``runs/enfr``) runs here, unchanged, against a toy model trained in its place, and exits 0. Training
commands (minutes each), TensorBoard (a server) and lines that read a corpus from ``$S2S_DATA_DIR`` are left to
the tour itself; the training presets they name are checked to compose."""

import os
import re
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from s2s_attn.cli import config_dir

from ..conftest import REPO_ROOT
from .test_bad_input import TINY_MODEL

README = REPO_ROOT / "README.md"
COMMANDS = {"s2s-translate": "translate", "s2s-evaluate": "evaluate", "s2s-plot": "plot", "s2s-train": "train",
            "s2s-compare": "compare"}


def tour_lines() -> list[str]:
    """The command lines of the tour's ```bash blocks, comments removed."""
    text = README.read_text(encoding="utf-8")
    tour = text[text.index("## A five-minute tour"):]
    tour = tour[: tour.index("\n## ", 1)]
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", tour, re.DOTALL):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def as_module_call(line: str) -> str:
    """The line with each s2s-* command run as ``python -m s2s_attn.cli.NAME`` from this checkout."""
    for command, module in COMMANDS.items():
        line = re.sub(rf"(?<![\w-]){command}(?![\w-])", f"{sys.executable} -m s2s_attn.cli.{module}", line)
    return line


@pytest.fixture(scope="module")
def tour_dir(tmp_path_factory):
    """A directory with ``runs/enfr``: a tiny model trained a few steps on the toy task."""
    from s2s_attn.training.trainer import train

    root = tmp_path_factory.mktemp("tour")
    overrides = ["data=toy", "data.train_size=300", "data.valid_size=10", "data.test_size=10", *TINY_MODEL,
                 "trainer.threads=1", "trainer.max_steps=4", "trainer.eval_every=4", "trainer.batch_size=16",
                 "trainer.batch_tokens=null", "trainer.max_minutes=null", f"data.cache_dir={root}/cache"]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        train(compose("config", overrides=overrides), root / "runs" / "enfr")
    return root


def test_the_tour_has_the_commands_this_test_runs():
    lines = tour_lines()
    for command in ("s2s-translate", "s2s-evaluate", "s2s-plot", "s2s-train", "s2s-compare"):
        assert any(command in line for line in lines), command


def test_every_translate_evaluate_and_plot_line_of_the_tour_runs(tour_dir):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    ran = 0
    for line in tour_lines():
        if "$S2S_DATA_DIR" in line or not re.search(r"s2s-(translate|evaluate|plot)|^printf", line):
            continue
        done = subprocess.run(as_module_call(line), shell=True, cwd=tour_dir, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, f"{line}\n{done.stderr[-2000:]}"
        ran += 1
    assert ran >= 6
    assert (tour_dir / "output.txt").read_text().count("\n") == 2
    assert (tour_dir / "attention.jsonl").read_text().count("\n") == 2
    assert (tour_dir / "plots" / "attention_1.png").is_file()


def test_the_training_lines_of_the_tour_compose():
    """Each s2s-train line's overrides make a valid config (the runs themselves take minutes)."""
    from s2s_attn.schema import validate

    for line in tour_lines():
        if not line.startswith("s2s-train"):
            continue
        overrides = [word for word in line.split()[1:] if word != "-m" and not word.startswith("hydra.")]
        first = [word.split(",")[0] for word in overrides]  # a sweep's first value
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            validate(compose("config", overrides=first))
