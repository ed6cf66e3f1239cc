"""Decoding: greedy and beam search (batched, continuous), the fused decoding steps, and the translator."""

# Sentences decoded at once by default (`Translator`, `s2s-translate` and `s2s-evaluate --batch-size`; kept here,
# free of torch, for the command lines' --help). The benchmark model's 2,000 test sentences, interleaved runs on
# the Intel machine with AMX (README, "Measured on this project's machine"):
# greedy 1,509-1,558 sent/s in batches of 64, 1,792-1,832 in 128, 1,776-1,790 in 256; beam 5: 577-605, 620-621,
# 629-630. 128 takes nearly all of it; peak RSS of the whole benchmark (scripts/benchmark.py --checkpoint) 530
# against 427 MiB in batches of 64.
DECODE_BATCH_SIZE = 128
