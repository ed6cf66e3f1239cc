"""The fast layer: everything that exists only for speed, beside the reference model (`s2s_attn.model`).

The reference model computes every configuration on every device. On the CPU, some exact configurations of it
have a faster implementation here that computes the same function (the tests compare outputs, losses, gradients
and decoded text):

* `recurrence`: the encoder's bidirectional GRU and the decoders' teacher-forcing loops as autograd functions with
  a hand-written backward;
* `step`: fused decoding steps for greedy and beam search;
* `loss`: the output layer and the cross-entropy a block of positions at a time;
* `kernels` (``csrc/cpu_kernels.cpp``): compiled element-wise work, built on first use;
* `gemm`, `torch_private`: which library multiplies float32 matrices; `allocator`: glibc malloc's thresholds.

`dispatch.accelerate` is the one entry point: it decides, per component, which implementation runs, installs the
fast ones on the model's seams (``GRUEncoder.fast``, ``decoder.fast_loop``, ``decoder.fast_stepper``,
``Seq2Seq.fast_loss``) and returns the decision that a run logs and writes to ``results.json``.
``fast=off`` (the config group) runs the reference everywhere.
"""

from .dispatch import Decision, FastSettings, accelerate, configure_process

__all__ = ["Decision", "FastSettings", "accelerate", "configure_process"]
