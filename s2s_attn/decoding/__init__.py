"""Decoding: greedy and beam search (batched, continuous), the fused decoding steps, and the translator."""

# Sentences decoded at once by default (`Translator`, `s2s-translate` and `s2s-evaluate --batch-size`; kept here,
# free of torch, for the command lines' --help). 128 gets nearly all the speed of larger batches at a moderate
# memory cost.
DECODE_BATCH_SIZE = 128
