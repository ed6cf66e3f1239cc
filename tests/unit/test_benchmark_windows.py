"""scripts/benchmark.py measures training as the peers' own scripts do, as well as over all timed steps: the
target tokens/s of each 50-step window and their median (the peers' parse_throughput.py statistic), and the
side-by-side ratio compares like with like (our median window over the peer's, and decoding with models trained as
many steps)."""

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "benchmark.py"


def test_ratio_gives_both_our_overall_rate_and_our_median_window_over_the_peers_median_window(benchmark_script):
    benchmark = benchmark_script
    ours = {"config": "bahdanau", "train_tok_s": 3000.0, "train_tok_s_median": 3300.0, "greedy_sent_s": 900.0,
            "beam5_sent_s": 300.0, "peak_rss_mib": 800.0}
    peer = {"config": "peer:onmt_mlp", "train_tok_s": 1500, "greedy_sent_s": 300.0, "beam5_sent_s": 100.0,
            "peak_rss_mib": 2400.0}
    ratio = benchmark.ratios(ours, peer)
    assert ratio["config"] == "ratio:bahdanau/peer:onmt_mlp"
    assert ratio["train_tok_s"] == 2.0
    assert ratio["train_tok_s_median"] == 2.2
    assert ratio["greedy_sent_s"] == 3.0 and ratio["beam5_sent_s"] == 3.0
    assert ratio["peak_rss_mib"] == 0.33


def test_a_measured_configuration_reports_each_50_step_window_and_their_median(tmp_path):
    env = {**os.environ, "S2S_CACHE_DIR": str(tmp_path / "cache"), "S2S_DATA_DIR": str(tmp_path / "data")}
    spec = ("tiny=experiment=benchmark data=toy data.train_size=2000 model.emb_size=16 model.encoder_hidden=16 "
            "model.decoder_hidden=16 trainer.batch_size=16")
    child = subprocess.run([sys.executable, str(SCRIPT), "--one", spec, "--steps", "100", "--warmup", "2",
                            "--decode", "16", "--threads", "1", "--decode-after-steps", "120"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-2000:]
    result = json.loads([line for line in child.stdout.splitlines() if line.startswith("{")][-1])
    windows = result["train_tok_s_windows"]
    assert len(windows) == 2 and all(rate > 0 for rate in windows)
    assert abs(result["train_tok_s_median"] - sum(windows) / 2) < 1  # the median of two: their mean (rounded)
    assert min(windows) - 1 <= result["train_tok_s"] <= max(windows) + 1  # the overall rate lies between them
    assert result["steps"] == 100 and result["train_sent_s"] > 0
    assert result["decode_model_steps"] == 120  # 2 warm-up, 5 counting FLOPs, 100 timed, 13 more before decoding
    assert result["greedy_out_pieces"] > 0


def test_a_peers_decoding_model_is_read_from_its_checkpoint_name_and_greedy_output(benchmark_script, tmp_path):
    (tmp_path / "onmt_mlp.beam1.sp").write_text("▁le ▁chat\n▁il ▁est ▁là .\n", encoding="utf-8")
    (tmp_path / "onmt_mlp.ckpt.txt").write_text("/somewhere/runs/onmt_mlp/model_step_900.pt\n")
    read = benchmark_script.peer_decoding_model
    assert read(tmp_path, "onmt_mlp", None) == {"decode_model_steps": 900, "greedy_out_pieces": 3.0}
    assert read(tmp_path, "onmt_mlp", "/x/runs_2/model_step_1200.pt")["decode_model_steps"] == 1200
    assert read(tmp_path, "joey_bahdanau", None) == {"decode_model_steps": None, "greedy_out_pieces": None}


def test_each_configuration_decodes_after_as_many_steps_as_the_peer_it_is_compared_with(benchmark_script):
    steps = benchmark_script.peer_decode_steps
    peers = {"onmt_mlp": {"decode_model_steps": 800}, "onmt_general": {"decode_model_steps": 1000}}
    assert steps("bahdanau", peers) == 800
    assert steps("luong_general_parallel", peers) == 1000
    assert steps("bahdanau_bf16", peers) == 1000  # compared with no peer: the most of them
    assert steps("bahdanau", {"onmt_mlp": {"decode_model_steps": None}}) is None
