"""scripts/benchmark.py measures training as the peers' own scripts do, as well as over all timed steps: the
target tokens/s of each 50-step window and their median (the peers' parse_throughput.py statistic), and the
side-by-side ratio compares like with like (our median window over the peer's, decoding with models trained as
many steps, each peer measured next to the configuration it is compared with, in rounds)."""

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


def test_each_peer_is_measured_next_to_its_configuration_ours_first_every_other_round(benchmark_script):
    schedule = benchmark_script.enumerate_schedule(["onmt_mlp", "onmt_general"],
                                                   ["bahdanau", "luong_general_parallel", "bahdanau_bf16"], 2)
    assert schedule == [
        (0, ("peer", "onmt_mlp")), (0, ("ours", "bahdanau")),
        (0, ("peer", "onmt_general")), (0, ("ours", "luong_general_parallel")),
        (0, ("ours", "bahdanau_bf16")),  # compared with no peer: after the pairs
        (1, ("ours", "bahdanau")), (1, ("peer", "onmt_mlp")),
        (1, ("ours", "luong_general_parallel")), (1, ("peer", "onmt_general")),
        (1, ("ours", "bahdanau_bf16")),
    ]
    assert benchmark_script.enumerate_schedule([], ["a", "b"], 3) == [(0, ("ours", "a")), (0, ("ours", "b"))]


def test_the_ratios_of_several_rounds_are_summed_up_by_their_medians(benchmark_script):
    rounds = [{"config": "ratio:bahdanau/peer:onmt_mlp", "round": r, "train_tok_s": t, "greedy_sent_s": 2.5}
              for r, t in enumerate([1.8, 2.2, 2.1])]
    summary = benchmark_script.median_ratios(rounds)
    assert summary == {"config": "ratio:bahdanau/peer:onmt_mlp", "rounds": 3, "train_tok_s": 2.1,
                       "greedy_sent_s": 2.5, "train_tok_s_rounds": [1.8, 2.2, 2.1]}


def test_a_run_of_two_rounds_prints_each_rounds_ratio_and_their_median(benchmark_script, monkeypatch, capsys,
                                                                      tmp_path):
    rates = iter([1500, 3000, 3600, 2000])  # peer, ours (round 0); ours, peer (round 1)

    def fake_peer(run, bench, peers_dir, seconds):
        return {"config": f"peer:{run}", "train_tok_s": next(rates), "decode_model_steps": 700}

    def fake_child(cmd, capture_output, text):
        figures = {"config": cmd[cmd.index("--one") + 1].partition("=")[0], "train_tok_s": next(rates)}
        return subprocess.CompletedProcess(cmd, 0, stdout=json.dumps(figures) + "\n", stderr="")

    (tmp_path / "run_all.sh").write_text("")
    monkeypatch.setattr(benchmark_script, "run_peer", fake_peer)
    monkeypatch.setattr(benchmark_script.subprocess, "run", fake_child)
    monkeypatch.setattr(sys, "argv", ["benchmark.py", "--peer", "onmt_mlp", "--peer-rounds", "2", "--peers-bench",
                                      str(tmp_path), "--configs", "bahdanau=experiment=benchmark"])
    assert benchmark_script.main() == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["config"] for line in lines] == ["peer:onmt_mlp", "bahdanau", "ratio:bahdanau/peer:onmt_mlp",
                                                  "bahdanau", "peer:onmt_mlp", "ratio:bahdanau/peer:onmt_mlp",
                                                  "ratio:bahdanau/peer:onmt_mlp"]
    assert [line.get("round") for line in lines[:6]] == [0, 0, 0, 1, 1, 1]
    assert lines[2]["train_tok_s"] == 2.0 and lines[5]["train_tok_s"] == 1.8
    assert lines[6] == {"config": "ratio:bahdanau/peer:onmt_mlp", "rounds": 2, "train_tok_s": 1.9,
                        "train_tok_s_rounds": [2.0, 1.8]}
