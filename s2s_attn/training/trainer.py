"""The training loop: teacher forcing, Adam, clipping, label smoothing, LR schedule, evaluation,
early stopping, a time budget, checkpoints and TensorBoard.

``train(cfg)`` takes the composed Hydra config and the run directory and returns the final metrics.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ..data.batching import Batch, BatchIterator, inference_batches, make_batch
from ..data.corpus import prepare_data
from ..data.guidance import piece_links
from ..data.store import open_store
from ..data.stream import release_freed_memory, resolve_workers
from ..data.tokenizer import PAD_ID, Tokenizer
from ..decoding.translator import Translator, resolve_device
from ..evaluation.alignment import AlignmentMonitor
from ..evaluation.metrics import Scores, score
from ..fast import FastSettings, accelerate, configure_process
from ..model.loss import guided_alignment_loss
from ..model.seq2seq import ModelConfig, Seq2Seq
from ..outputs import unwritable_dir, write_atomic
from ..schema import ConfigError, validate
from ..viz.stats import attention_statistics
from . import distributed
from .checkpoint import (
    CheckpointError,
    load_checkpoint,
    prune_step_checkpoints,
    remove_stale_temporaries,
    save_checkpoint,
    step_checkpoint_path,
    step_checkpoints,
    tokenizer_from,
    tokenizer_tensors,
)
from .distributed import Distributed, NullWriter
from .resume import (
    TrainingError,
    TrainState,
    earlier_runs_hint,
    find_resume_checkpoint,
    load_resumable,
    restore_rng,
    rng_state,
    run_lock,
)

log = logging.getLogger(__name__)


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def autocast_context(device: torch.device, precision: str):
    """bf16/fp16 autocast where asked (``auto``: bf16 on CUDA if supported, else fp16; fp32 on CPU)."""
    if precision == "auto":
        if device.type != "cuda":
            return contextlib.nullcontext(), None
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp32":
        return contextlib.nullcontext(), None
    if precision not in ("bf16", "fp16"):
        raise ValueError(f"unknown trainer.precision {precision!r}; valid: auto, fp32, bf16, fp16")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    return torch.autocast(device.type, dtype=dtype), scaler


class LRSchedule:
    """Learning rate at a point of training: linear warm-up, then constant, 1/sqrt(step), or a
    linear/cosine decay to 0 at the end of training.

    The end of training is ``max_steps`` when it is set; otherwise the ``max_minutes`` budget, so a
    time-limited run anneals exactly when its time runs out (that schedule then depends on the
    machine's speed; set ``trainer.max_steps`` for a run that a seed reproduces step for step).
    """

    VALID = ("constant", "inverse_sqrt", "linear", "cosine")

    def __init__(self, base_lr: float, schedule: str, warmup: int, max_steps: int | None,
                 max_seconds: float | None, final_fraction: float = 0.0) -> None:
        if schedule not in self.VALID:
            raise ValueError(f"unknown trainer.lr_schedule {schedule!r}; valid: {', '.join(self.VALID)}")
        if schedule in ("linear", "cosine") and not (max_steps or max_seconds):
            raise ValueError(f"trainer.lr_schedule={schedule} decays to the end of training: "
                             "set trainer.max_steps or trainer.max_minutes")
        self.base_lr, self.schedule, self.warmup = base_lr, schedule, warmup
        self.max_steps, self.max_seconds, self.final_fraction = max_steps, max_seconds, final_fraction

    def progress(self, step: int, seconds: float) -> float:
        """Fraction of training done (0..1), by steps if max_steps is set, else by time."""
        if self.max_steps:
            return min(1.0, step / self.max_steps)
        return min(1.0, seconds / self.max_seconds)

    def __call__(self, step: int, seconds: float) -> float:
        if self.warmup and step < self.warmup:
            return self.base_lr * (step + 1) / self.warmup
        if self.schedule == "constant":
            return self.base_lr
        if self.schedule == "inverse_sqrt":
            return self.base_lr * math.sqrt(max(self.warmup, 1) / max(step, 1))
        progress = self.progress(step, seconds)
        if self.schedule == "linear":
            decay = 1.0 - progress
        else:
            decay = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.base_lr * (self.final_fraction + (1.0 - self.final_fraction) * decay)


class Evaluator:
    """Validation/test scoring: teacher-forced loss and perplexity, greedy BLEU and chrF."""

    def __init__(self, src_lines, ref_lines, tokenizer: Tokenizer, tgt_lang: str, batch_size: int, max_src: int):
        self.src_lines, self.ref_lines, self.tokenizer = src_lines, ref_lines, tokenizer
        self.tgt_lang, self.batch_size = tgt_lang, batch_size
        self.src_ids = [ids[:max_src] for ids in tokenizer.encode_src(src_lines)]
        self.tgt_ids = tokenizer.encode_tgt(ref_lines)

    @torch.no_grad()
    def loss(self, model: Seq2Seq, device: torch.device) -> tuple[float, float]:
        """Mean negative log-likelihood per target token (no label smoothing) and its perplexity."""
        model.eval()
        total, tokens = 0.0, 0
        for indices in inference_batches(self.src_ids, self.batch_size):
            batch = make_batch([self.src_ids[i] for i in indices], [self.tgt_ids[i] for i in indices], indices)
            batch = batch.to(device)
            loss_sum, _ = model(batch.src, batch.src_len, batch.tgt_in, batch.tgt_out)  # summed over real tokens
            total += loss_sum.item()
            tokens += batch.num_tgt_tokens
        nll = total / max(tokens, 1)
        return nll, math.exp(min(nll, 50.0))

    def scores(self, model: Seq2Seq, device: torch.device) -> tuple[Scores, list[str], dict]:
        """Greedy-decode every sentence; -> (BLEU/chrF, hypotheses, attention statistics of that same
        decoding: `s2s_attn.viz.stats.attention_statistics`, mean entropy and diagonal share)."""
        model.eval()
        translator = Translator(model, self.tokenizer, device)
        ids, attentions = translator.translate_ids(self.src_ids, self.batch_size, return_attention=True)
        hyps = self.tokenizer.decode_tgt(ids)
        return score(hyps, self.ref_lines, self.tgt_lang), hyps, attention_statistics(attentions)


class AttentionProbe:
    """Attention images of a few fixed validation sentences, logged to TensorBoard at every evaluation.

    The sentences are ``count`` non-empty validation sentences spread over the range of source lengths
    (at the 1/(count+1), 2/(count+1), ... quantiles of the length-sorted set: corpora sorted by length,
    such as Tatoeba, would otherwise give only one-word sentences), always the same ones, so the image
    slider of each tag shows how one sentence's attention evolves. Each is decoded greedily and logged as
    an image ``attention/valid_{k}`` (the mean of the heads for multi-head attention, and then also
    one image per head, ``attention/valid_{k}/head_{h}``), with its source, hypothesis and reference
    as text under the same tag (``attention/valid_{k}/text_summary`` in the event files).
    """

    def __init__(self, evaluator: Evaluator, count: int, dpi: int = 100) -> None:
        self.evaluator, self.dpi = evaluator, dpi
        lines = evaluator.src_lines
        by_length = sorted((i for i, line in enumerate(lines) if line.strip()), key=lambda i: (len(lines[i]), i))
        count = min(max(count, 0), len(by_length))
        quantiles = [by_length[(k + 1) * len(by_length) // (count + 1)] for k in range(count)]
        self.indices = sorted(set(quantiles))

    @torch.no_grad()
    def log(self, writer: SummaryWriter, model: Seq2Seq, device: torch.device, step: int) -> None:
        if not self.indices:
            return
        from ..viz.heatmap import attention_figure, figure_to_array

        model.eval()
        ev = self.evaluator
        translator = Translator(model, ev.tokenizer, device)
        src_ids = [ev.src_ids[i] for i in self.indices]
        hyps, attentions, heads = translator.translate_ids(src_ids, len(src_ids), return_heads=True)
        for k, i in enumerate(self.indices):
            item = translator.attended(src_ids[k], hyps[k], attentions[k], heads[k], source=ev.src_lines[i])
            tag = f"attention/valid_{k}"
            fig = attention_figure(item.attention, item.src_tokens, item.tgt_tokens,
                                   title=f"valid {k}, step {step}", dpi=self.dpi)
            writer.add_image(tag, figure_to_array(fig), step, dataformats="HWC")
            if item.heads is not None:
                for h, head in enumerate(item.heads):
                    fig = attention_figure(head, item.src_tokens, item.tgt_tokens, annotate=False,
                                           title=f"valid {k}, head {h}, step {step}", dpi=self.dpi)
                    writer.add_image(f"{tag}/head_{h}", figure_to_array(fig), step, dataformats="HWC")
            writer.add_text(tag, f"**src** {item.source}  \n**hyp** {item.translation}  \n**ref** {ev.ref_lines[i]}",
                            step)


def read_split(data_dir: Path, split: str) -> tuple[list[str], list[str]]:
    src = (data_dir / f"{split}.src").read_text(encoding="utf-8").splitlines()
    tgt = (data_dir / f"{split}.tgt").read_text(encoding="utf-8").splitlines()
    return src, tgt


@dataclass
class Corpus:
    """Prepared data of a run: the tokenizer, the training pairs as piece ids, raw valid/test text."""

    data_dir: Path
    tokenizer: Tokenizer
    train_src: Sequence[Sequence[int]]  # a TokenColumn: sentences mapped from the token store
    train_tgt: Sequence[Sequence[int]]
    valid: tuple[list[str], list[str]]
    test: tuple[list[str], list[str]]
    tgt_lang: str
    max_src_pieces: int
    train_links: list[np.ndarray] | None = None  # guided alignment: (source piece, target piece) pairs per pair


def load_corpus(cfg: DictConfig, tokenizer: Tokenizer | None = None) -> Corpus:
    """Prepare the data (cached), train or load SentencePiece (unless ``tokenizer`` is given: a resumed
    run keeps the one its checkpoint was trained with), map the training pairs' ids from the token store
    (encoded once, `s2s_attn.data.store`)."""
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    data_dir = prepare_data(data_cfg, log=log.info)
    workers = resolve_workers(data_cfg.get("workers"))
    if tokenizer is None:
        tokenizer = Tokenizer.train_or_load(data_dir, data_cfg.get("spm", {}), log=log.info, workers=workers)
    store = open_store(data_dir, tokenizer, workers, log=log.info)
    release_freed_memory()
    max_src, max_tgt = int(data_cfg.get("max_src_pieces", 200)), int(data_cfg.get("max_tgt_pieces", 200))
    links = None
    guided = cfg.get("guided_alignment") or {}
    if str(guided.get("name", "none")) != "none":  # the aligner's links, carried to pieces (cached)
        train_src, train_tgt = read_split(data_dir, "train")
        links = piece_links(data_dir, tokenizer, train_src, train_tgt, str(data_cfg.get("src_lang", "")),
                            str(data_cfg.get("tgt_lang", "")), str(guided.get("symmetrization", "grow-diag-final-and")),
                            log=log.info)
        del train_src, train_tgt
    train_src, train_tgt = store.src, store.tgt
    keep = np.flatnonzero((store.src.lengths <= max_src) & (store.tgt.lengths <= max_tgt)).astype(np.int32)
    if len(keep) < len(store):
        log.info("skipped %d training pairs longer than %d/%d pieces", len(store) - len(keep), max_src, max_tgt)
        train_src, train_tgt = store.src.select(keep), store.tgt.select(keep)
        links = None if links is None else [links[i] for i in keep]
    corpus = Corpus(
        data_dir=data_dir,
        tokenizer=tokenizer,
        train_src=train_src,
        train_tgt=train_tgt,
        valid=read_split(data_dir, "valid"),
        test=read_split(data_dir, "test"),
        tgt_lang=str(data_cfg.get("tgt_lang", "en")),
        max_src_pieces=max_src,
        train_links=links,
    )
    log.info("data: %d train, %d valid, %d test pairs (%s)", len(corpus.train_src), len(corpus.valid[0]),
             len(corpus.test[0]), data_dir)
    return corpus


def guided_weight(cfg: DictConfig) -> float:
    """Guided alignment's weight: ``guided_alignment.weight``, or 0 for ``guided_alignment=none``."""
    guided = cfg.get("guided_alignment") or {}
    return 0.0 if str(guided.get("name", "none")) == "none" else float(guided.get("weight", 0.05))


def model_config_from(cfg: DictConfig, tokenizer: Tokenizer) -> ModelConfig:
    """The model's constructor arguments from the ``model`` and ``attention`` config groups."""
    mcfg = cfg.model
    return ModelConfig(
        src_vocab_size=tokenizer.src_vocab_size,
        tgt_vocab_size=tokenizer.tgt_vocab_size,
        emb_size=int(mcfg.emb_size),
        encoder_hidden=int(mcfg.encoder_hidden),
        encoder_layers=int(mcfg.encoder_layers),
        bidirectional=bool(mcfg.bidirectional),
        decoder=str(mcfg.decoder),
        decoder_hidden=int(mcfg.decoder_hidden),
        decoder_layers=int(mcfg.decoder_layers),
        input_feeding=bool(mcfg.get("input_feeding", True)),
        output_size=int(mcfg.output_size),
        dropout=float(mcfg.dropout),
        tie_embeddings=bool(mcfg.tie_embeddings),
        attention=str(cfg.attention.name),
        attention_size=int(cfg.attention.size),
        attention_heads=int(cfg.attention.get("heads", 1)),
        init=str(mcfg.get("init", "uniform")),
        init_range=float(mcfg.get("init_range", 0.1)),
        pad_id=PAD_ID,
    )


def make_optimizer(model: torch.nn.Module, tcfg: DictConfig) -> torch.optim.Adam:
    """Adam over all parameters, the fused implementation (one kernel per parameter for the whole update, which
    trains faster on the CPU than the default multi-tensor one)."""
    return torch.optim.Adam(model.parameters(), lr=float(tcfg.lr), betas=tuple(tcfg.get("betas", (0.9, 0.999))),
                            eps=float(tcfg.get("eps", 1e-8)), fused=True)


class StepRunner:
    """One optimisation step on a batch: forward (under autocast), loss, backward, clip, update.

    A step whose loss (or, without a gradient scaler, gradient norm) is not finite is skipped: no
    update, counted in ``skipped``, and ``last_skipped`` is set. After ``max_bad_steps`` such steps in
    a row it raises TrainingError (the model diverged; going on would only waste the machine).
    With fp16, infinite gradients are the gradient scaler's business (it skips and lowers the scale).
    """

    def __init__(self, model: Seq2Seq, optimizer: torch.optim.Optimizer, device: torch.device, precision: str,
                 label_smoothing: float, clip_grad: float, max_bad_steps: int = 10,
                 dist: Distributed | None = None, guided_weight: float = 0.0) -> None:
        self.model, self.optimizer, self.clip_grad = model, optimizer, clip_grad  # model: maybe DDP-wrapped
        self.guided_weight = guided_weight  # guided alignment's weight, for batches with an align_target
        self.last_guided: float | None = None  # the last step's guided alignment loss per target token
        self.dist = dist or Distributed()
        self.autocast, self.scaler = autocast_context(device, precision)
        self.label_smoothing = label_smoothing
        self.max_bad_steps = max_bad_steps
        self.skipped, self.bad_in_a_row, self.last_skipped = 0, 0, False

    def __call__(self, batch: Batch) -> tuple[float, int, float]:
        """-> (summed loss, target tokens, gradient norm before clipping).

        With DDP the batch is this rank's share of a global batch; the loss and tokens returned are the
        global batch's (the same on every rank), and so is the update: each rank's summed loss is divided
        by the global batch's target tokens and multiplied by the number of ranks, as DDP averages the
        ranks' gradients, which makes the update that of the global batch's mean loss.
        """
        with self.autocast:  # output layer and loss fused, on the non-padding target positions only
            loss_sum, attention = self.model(batch.src, batch.src_len, batch.tgt_in, batch.tgt_out,
                                             self.label_smoothing)
        n_tokens = batch.loss_tokens
        objective = loss_sum
        if self.guided_weight and batch.align_target is not None:  # pull the attention towards the links
            guided = guided_alignment_loss(attention, batch.align_target)
            objective = loss_sum + self.guided_weight * guided
            self.last_guided = float(guided.detach()) / n_tokens
        loss = objective / n_tokens * self.dist.world_size
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        grad_norm = self.clip_gradients()
        if self.dist.enabled:  # every rank skips a step or none does: a non-finite loss anywhere counts
            loss_sum = self.dist.all_reduce_sum(loss_sum.detach().clone())
            loss = loss_sum / n_tokens
        finite = bool(torch.isfinite(loss)) and (self.scaler is not None or bool(torch.isfinite(grad_norm)))
        self.last_skipped = not finite
        if not finite:
            self.skip(float(loss.detach()))
        elif self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if finite:
            self.bad_in_a_row = 0
        return loss_sum.item(), n_tokens, float(grad_norm)

    def clip_gradients(self) -> torch.Tensor:
        """Scale the gradients to norm ``clip_grad`` if their norm is above it (``clip_grad_norm_``); -> the norm
        before; ``clip_grad`` 0 never scales. At or below the limit ``clip_grad_norm_`` multiplies every gradient
        by 1: a pass over all of them that most steps of a run would take for nothing."""
        parameters = [param for param in self.model.parameters() if param.grad is not None]
        grad_norm = torch.nn.utils.get_total_norm([param.grad for param in parameters])
        if self.clip_grad and bool(grad_norm > self.clip_grad):
            torch.nn.utils.clip_grads_with_norm_(parameters, self.clip_grad, grad_norm)
        return grad_norm

    def skip(self, loss: float) -> None:
        self.skipped += 1
        self.bad_in_a_row += 1
        self.optimizer.zero_grad(set_to_none=True)
        what = "loss" if not math.isfinite(loss) else "gradient norm"
        log.warning("non-finite %s, update skipped (%d so far, %d in a row)", what, self.skipped, self.bad_in_a_row)
        if self.max_bad_steps and self.bad_in_a_row >= self.max_bad_steps:
            raise TrainingError(
                f"the {what} was not finite in {self.bad_in_a_row} steps in a row (trainer.max_bad_steps="
                f"{self.max_bad_steps}): training diverged. Lower trainer.lr, keep trainer.clip_grad on, or use "
                "trainer.precision=fp32; the last good checkpoints are in the run's checkpoints/ directory"
            )


def check_outputs(cfg: DictConfig, run_dir: Path) -> None:
    """Before any work: the run directory and the prepared-data cache can be written (ConfigError if not)."""
    for key, directory in (("hydra.run.dir", run_dir), ("data.cache_dir", Path(str(cfg.data.cache_dir)))):
        if reason := unwritable_dir(directory):
            raise ConfigError(f"{key}={directory} cannot be used: {reason}")


def fast_settings(cfg: DictConfig) -> FastSettings:
    """The ``fast`` group's settings (the defaults when a config has no such group)."""
    return FastSettings.from_config(cfg.get("fast"))


def resume_point(cfg: DictConfig, run_dir: Path) -> dict[str, Any] | None:
    """The checked checkpoint that ``trainer.resume`` names, or None for a new run."""
    resume = cfg.trainer.get("resume")
    path = find_resume_checkpoint(None if resume is None else str(resume), run_dir)
    if path is None:
        if str(resume).strip().lower() == "auto":
            log.info("trainer.resume=auto: no checkpoint in %s, starting a new run%s", run_dir / "checkpoints",
                     earlier_runs_hint(run_dir))
        return None
    payload, changes = load_resumable(path, OmegaConf.to_container(cfg, resolve=True))
    log.info("resuming from %s (step %d)", payload["path"], int(payload["state"]["step"]))
    if changes:
        log.warning("resuming with changed settings: %s", "; ".join(changes))
    return payload


def restore_training(payload: dict[str, Any], model: Seq2Seq, optimizer: torch.optim.Optimizer,
                     run_step: StepRunner, iterator: BatchIterator) -> TrainState:
    """Load a resumable checkpoint into the freshly built model, optimizer, scaler and data iterator."""
    try:
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        if run_step.scaler is not None and payload.get("scaler"):
            run_step.scaler.load_state_dict(payload["scaler"])
        iterator.load_state_dict(payload["iterator"])
        state = TrainState.from_dict(payload["state"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise CheckpointError(f"cannot resume from {payload['path']}: it does not fit this model: {first}") from None
    run_step.skipped = state.skipped_steps
    return state


def set_aside_newer_checkpoints(ckpt_dir: Path, step: int) -> None:
    """Resuming from an older checkpoint of the same run: its later ``step_N.pt`` files belong to the
    abandoned continuation; rename them (``abandoned-step_N.pt``) so that ``resume=auto`` and pruning
    never take them for this run's, without deleting anything."""
    for later_step, path in step_checkpoints(ckpt_dir):
        if later_step > step:
            target = path.with_name(f"abandoned-{path.name}")
            os.replace(path, target)
            log.warning("checkpoint %s is newer than the one resumed from; renamed to %s", path, target.name)


def carry_best_checkpoint(payload: dict[str, Any], ckpt_dir: Path) -> None:
    """Resuming into another directory: copy the source run's best.pt, which the resumed state's best
    BLEU refers to."""
    source = Path(payload["path"]).parent / "best.pt"
    target = ckpt_dir / "best.pt"
    if target.exists() or not source.is_file() or source.resolve() == target.resolve():
        return
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tmp = ckpt_dir / ".best.pt.copy.tmp"
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def wrap_for_training(model: Seq2Seq, ctx: Distributed, device: torch.device, compile_model: bool) -> torch.nn.Module:
    """The module the training steps run: the model itself, in DistributedDataParallel with several ranks
    (it broadcasts rank 0's weights now and averages the gradients in every backward pass), compiled
    with ``torch.compile`` when ``trainer.compile`` asks. Evaluation and checkpoints use ``model``."""
    train_model: torch.nn.Module = model
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if compile_model:
        train_model = torch.compile(train_model)
    return train_model


def rank_rng_state(payload: dict[str, Any], ctx: Distributed, seed: int) -> dict[str, Any]:
    """The generator states this rank resumes with: its own when the checkpoint was written by as many
    ranks (``rng_ranks``); else rank 0's, and other ranks reseed (an exact resume needs the same number
    of processes; the weights, optimizer and data position are restored in any case)."""
    saved = payload.get("rng_ranks")
    if saved is not None and len(saved) == ctx.world_size:
        return saved[ctx.rank]
    if ctx.enabled or saved is not None:
        log.warning("the checkpoint was written by %s process(es), this run has %d: random streams (dropout) "
                    "do not continue exactly", len(saved) if saved else 1, ctx.world_size)
    if ctx.rank > 0:
        set_seed(seed + 1000 * ctx.rank + int(payload["state"]["step"]))
        return rng_state()
    return payload["rng"]


def has_events(directory: Path) -> bool:
    return directory.is_dir() and any(directory.glob("events.out.tfevents.*"))


def train(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Train a model as ``cfg`` says, writing checkpoints, TensorBoard events and results to ``run_dir``.

    With ``trainer.resume`` (``auto`` or a path) it continues a run from its last checkpoint instead;
    see `s2s_attn.training.resume`. Only one training process at a time may use ``run_dir``.
    With ``trainer.ddp`` under torchrun, every process calls this; rank 0's ``run_dir`` is the run's,
    and only rank 0 writes into it (see `s2s_attn.training.distributed`); the others return
    ``{"rank": r, "steps": n}``.
    """
    validate(cfg)  # every setting against its rule, before anything is prepared (one-line ConfigError)
    check_outputs(cfg, Path(run_dir))
    configure_process(fast_settings(cfg))  # kernels=true builds them now, or fails before any data work
    threads = torch.get_num_threads()
    ctx, device = distributed.setup(bool(cfg.trainer.get("ddp", False)), resolve_device(str(cfg.trainer.device)))
    try:
        run_dir = Path(ctx.broadcast(str(run_dir)))
        with contextlib.ExitStack() as stack:
            ctx.on_main(lambda: stack.enter_context(run_lock(run_dir)))
            result = TrainingRun(cfg, run_dir, ctx, device).run()
            # every rank has finished before any leaves the group: a Gloo rank that tears the group down while
            # another still works in it can abort at exit ("terminate called without an active exception")
            ctx.barrier()
            return result
    finally:
        torch.set_num_threads(threads)  # trainer.threads is this run's setting, not the caller's
        if ctx.enabled:
            distributed.cleanup()


class TrainingRun:
    """One training run, read top to bottom: the constructor sets up the data, the model, the optimiser and
    the writers (and restores a resumed run's state); `run` trains until a stop condition holds, then scores the
    best checkpoint on the test split. Each step, evaluation and checkpoint is one method; what they share is an
    attribute of the run, with `state` (a `TrainState`) holding everything a checkpoint must restore."""

    def __init__(self, cfg: DictConfig, run_dir: Path, ctx: Distributed, device: torch.device) -> None:
        self.cfg, self.run_dir, self.ctx, self.device = cfg, run_dir, ctx, device
        tcfg = self.tcfg = cfg.trainer
        self.ckpt_dir = run_dir / "checkpoints"
        stale = remove_stale_temporaries(self.ckpt_dir) if ctx.is_main else []
        if stale:
            log.info("removed %d unfinished checkpoint file(s) left by an interrupted save", len(stale))
        resumed = ctx.on_main(lambda: resume_point(cfg, run_dir))  # every rank resumes from rank 0's checkpoint
        self.resumed = resumed
        set_seed(int(tcfg.seed))
        if tcfg.get("threads"):
            torch.set_num_threads(int(tcfg.threads))
        log.info("device: %s (%d CPU threads)", device, torch.get_num_threads())
        self._set_up_data()
        self._set_up_model()
        self.state = TrainState()
        if resumed is not None:
            self.state = restore_training(resumed, self.model, self.optimizer, self.run_step, self.iterator)
            if ctx.is_main:
                set_aside_newer_checkpoints(self.ckpt_dir, self.state.step)
                carry_best_checkpoint(resumed, self.ckpt_dir)
            self.state.resumes.append({"step": self.state.step, "checkpoint": resumed["path"],
                                       "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
        self.config_dict = OmegaConf.to_container(cfg, resolve=True)
        self.tokenizer_entries = tokenizer_tensors(self.tokenizer)
        # A resumed run drops the events that the killed process logged after its checkpoint (purge_step),
        # so the TensorBoard curves continue without doubled steps.
        tb_dir = run_dir / "tensorboard"
        purge_step = self.state.step + 1 if resumed is not None else (0 if has_events(tb_dir) else None)
        self.writer = SummaryWriter(log_dir=str(tb_dir), purge_step=purge_step) if ctx.is_main else NullWriter()
        if resumed is None:
            self.writer.add_text("config", "```\n" + OmegaConf.to_yaml(cfg) + "\n```", 0)
        self.start = time.time() - self.state.elapsed  # max_minutes counts the time spent before a resume
        self.last_saved = -1  # a resumed run rewrites its starting checkpoint at the end if it made no step

    def _set_up_data(self) -> None:
        """The prepared corpus (rank 0 fills the data cache first), the training batches and the evaluators."""
        cfg, tcfg, resumed = self.cfg, self.tcfg, self.resumed
        saved_tokenizer = tokenizer_from(resumed) if resumed is not None else None
        self.corpus = corpus = self.ctx.first_on_main(lambda: load_corpus(cfg, saved_tokenizer))
        if resumed is not None and resumed.get("data_dir") not in (None, corpus.data_dir.name):
            log.warning("the prepared data changed since the checkpoint (%s, now %s): the resumed run will not "
                        "repeat the original data order", resumed["data_dir"], corpus.data_dir.name)
        self.tokenizer = corpus.tokenizer
        self.iterator = BatchIterator(
            corpus.train_src, corpus.train_tgt, tcfg.get("batch_tokens"), tcfg.get("batch_size"),
            seed=int(tcfg.seed), rank=self.ctx.rank, world_size=self.ctx.world_size, links=corpus.train_links,
        )
        self.eval_batch = int(tcfg.get("eval_batch_size", 128))
        valid_src, valid_tgt = corpus.valid
        self.valid_eval = Evaluator(valid_src, valid_tgt, corpus.tokenizer, corpus.tgt_lang, self.eval_batch,
                                    corpus.max_src_pieces)
        self.attention_probe = AttentionProbe(self.valid_eval,
                                              int(cfg.get("logger", {}).get("attention_images", 4) or 0))
        self.alignment_monitor = AlignmentMonitor.from_config(cfg.get("alignment"), str(cfg.data.src_lang),
                                                              str(cfg.data.tgt_lang))
        if self.alignment_monitor is not None and self.ctx.is_main:  # eflomal's AER beside the diagonal (cached)
            self.alignment_monitor.compute_baseline(corpus.data_dir, str(cfg.data.src_lang), str(cfg.data.tgt_lang),
                                                    log=log.info)

    def _set_up_model(self) -> None:
        """The model, the optimiser and its schedule, and the step runner (DDP, autocast, clipping)."""
        cfg, tcfg, ctx = self.cfg, self.tcfg, self.ctx
        self.model_config = model_config_from(cfg, self.tokenizer)
        self.model = Seq2Seq(self.model_config).to(self.device)
        log.info("model: %s decoder, %s attention, %.2fM parameters", self.model_config.decoder,
                 self.model_config.attention, self.model.num_parameters() / 1e6)
        self.implementations = accelerate(self.model, fast_settings(cfg))  # fast paths where they claim the model
        log.info("%s", self.implementations.line())
        self.optimizer = make_optimizer(self.model, tcfg)
        self.max_steps = int(tcfg.max_steps) if tcfg.get("max_steps") else None
        self.max_seconds = float(tcfg.max_minutes) * 60 if tcfg.get("max_minutes") else None
        self.lr_at = LRSchedule(float(tcfg.lr), str(tcfg.lr_schedule), int(tcfg.warmup_steps), self.max_steps,
                                self.max_seconds, float(tcfg.get("lr_final_fraction", 0.0)))
        train_model = wrap_for_training(self.model, ctx, self.device, bool(tcfg.get("compile", False)))
        self.run_step = StepRunner(train_model, self.optimizer, self.device, str(tcfg.precision),
                                   float(tcfg.label_smoothing), float(tcfg.get("clip_grad") or 0.0),
                                   int(tcfg.get("max_bad_steps", 10) or 0), dist=ctx,
                                   guided_weight=guided_weight(cfg))
        if ctx.enabled:  # the same weights everywhere, but each rank its own dropout masks
            set_seed(int(tcfg.seed) + 1000 * ctx.rank)

    # ---- checkpoints ---------------------------------------------------------------------------------

    def payload(self, training_state: bool) -> dict[str, Any]:
        """What a checkpoint holds: the model and what rebuilds it; with ``training_state``, also everything a
        resumed run needs (optimiser, data position, random generators, the run's state)."""
        item = {
            "model_config": self.model_config.to_dict(),
            "model": self.model.state_dict(),
            "config": self.config_dict,
            "step": self.state.step,
            "best_bleu": self.state.best_bleu,
            "data_dir": self.corpus.data_dir.name,
            **self.tokenizer_entries,
        }
        if training_state:
            item.update(optimizer=self.optimizer.state_dict(), iterator=self.iterator.state_dict(),
                        rng=rng_state(), state=self.state.to_dict())
            if self.run_step.scaler is not None:
                item["scaler"] = self.run_step.scaler.state_dict()
        return item

    def save_training_state(self) -> None:
        """``step_N.pt`` with everything needed to resume; then drop all but the newest ``keep_last``."""
        if self.last_saved == self.state.step:
            return
        rngs = self.ctx.all_gather(rng_state())  # with DDP: every rank's generators (all ranks call this)
        self.last_saved = self.state.step
        if not self.ctx.is_main:
            return
        self.state.elapsed = time.time() - self.start
        self.writer.flush()  # the events up to this step are on disk before a checkpoint that resumes after them
        item = self.payload(training_state=True)
        if self.ctx.enabled:
            item["rng_ranks"] = rngs
        save_checkpoint(step_checkpoint_path(self.ckpt_dir, self.state.step), item)
        prune_step_checkpoints(self.ckpt_dir, int(self.tcfg.get("keep_last", 3)))

    # ---- evaluation ----------------------------------------------------------------------------------

    def evaluate(self) -> float:
        """Validation on rank 0: loss, BLEU, chrF, attention images and statistics (and AER with
        ``alignment=``); keeps ``best.pt`` and the early-stopping count. The caller saves the training state
        afterwards, on every rank."""
        model, writer, state, step = self.model, self.writer, self.state, self.state.step
        t0 = time.time()
        nll, ppl = self.valid_eval.loss(model, self.device)
        scores, hyps, attn_stats = self.valid_eval.scores(model, self.device)
        try:
            self.attention_probe.log(writer, model, self.device, step)
        except Exception as error:  # a plotting problem must not end a training run
            log.warning("attention images skipped at step %d: %s: %s", step, type(error).__name__, error)
        model.train()
        writer.add_scalar("valid/loss", nll, step)
        writer.add_scalar("valid/ppl", ppl, step)
        writer.add_scalar("valid/bleu", scores.bleu, step)
        writer.add_scalar("valid/chrf", scores.chrf, step)
        valid_src, valid_tgt = self.corpus.valid
        writer.add_text("valid/example", f"**src** {valid_src[0]}  \n**hyp** {hyps[0]}  \n**ref** {valid_tgt[0]}",
                        step)
        if attn_stats["rows"]:
            writer.add_scalar("attention/entropy", attn_stats["entropy"], step)
            writer.add_scalar("attention/diagonal_share", attn_stats["diagonal_share"], step)
        alignment = None
        if self.alignment_monitor is not None:
            alignment = self.alignment_monitor(model, self.tokenizer, self.device)
        if alignment is not None:
            for key in ("aer", "precision", "recall", "diagonal_aer"):
                writer.add_scalar(f"alignment/{key}", alignment[key], step)
            if "eflomal" in alignment:
                writer.add_scalar("alignment/eflomal_aer", alignment["eflomal"]["grow-diag-final-and"]["aer"], step)
        improved = scores.bleu > state.best_bleu
        if improved:
            state.best_bleu, state.bad_evals = scores.bleu, 0
            save_checkpoint(self.ckpt_dir / "best.pt", self.payload(training_state=False))
        else:
            state.bad_evals += 1
        entry = {"step": step, "minutes": (time.time() - self.start) / 60, "valid_loss": nll, "valid_ppl": ppl,
                 "valid_bleu": scores.bleu, "valid_chrf": scores.chrf,
                 "attention_entropy": attn_stats["entropy"] if attn_stats["rows"] else None,
                 "attention_diagonal_share": attn_stats["diagonal_share"] if attn_stats["rows"] else None}
        if alignment is not None:
            entry.update(aer=alignment["aer"], diagonal_aer=alignment["diagonal_aer"])
            if "eflomal" in alignment:
                entry.update(eflomal_aer=alignment["eflomal"]["grow-diag-final-and"]["aer"])
        state.history.append(entry)
        log.info(
            f"step {step}: valid loss {nll:.3f} ppl {ppl:.2f} BLEU {scores.bleu:.2f} chrF {scores.chrf:.2f}"
            + (f" AER {alignment['aer']:.3f} (diagonal {alignment['diagonal_aer']:.3f})" if alignment else "")
            + f"{' (best)' if improved else ''} [{time.time() - t0:.1f}s, {entry['minutes']:.1f} min]"
        )
        return scores.bleu

    # ---- the loop ------------------------------------------------------------------------------------

    def stop_reason(self, seconds: float) -> str | None:
        """Why training stops now (early stopping, max_steps, max_minutes), or None to go on."""
        patience = int(self.tcfg.get("patience") or 0)
        if patience and self.state.bad_evals >= patience:
            return f"early stopping (no BLEU gain in {patience} evaluations)"
        if self.max_steps is not None and self.state.step >= self.max_steps:
            return "max_steps"
        if self.max_seconds is not None and seconds >= self.max_seconds:
            return f"max_minutes={self.tcfg.max_minutes}"
        return None

    def train_step(self, batch: Batch, seconds: float) -> tuple[float, torch.Tensor]:
        """One update on ``batch`` at the learning rate of this step and time: -> (lr, gradient norm)."""
        state = self.state
        lr = self.lr_at(state.step, seconds)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss_sum, n_tokens, grad_norm = self.run_step(batch)
        state.step += 1
        state.skipped_steps = self.run_step.skipped
        state.window_tokens += n_tokens
        if not self.run_step.last_skipped:
            state.window_loss += loss_sum
            state.window_loss_tokens += n_tokens
        return lr, grad_norm

    def log_window(self, lr: float, grad_norm: torch.Tensor, seconds: float, progress: tqdm) -> None:
        """Every ``log_every`` steps: the window's mean training loss, tokens/s, learning rate and gradient
        norm to TensorBoard, results.json's loss curve and the progress bar; then a new window."""
        state, writer = self.state, self.writer
        state.total_tokens += state.window_tokens
        state.train_seconds += seconds
        tok_s = state.window_tokens / max(seconds, 1e-9)
        writer.add_scalar("train/lr", lr, state.step)
        writer.add_scalar("train/tokens_per_s", tok_s, state.step)
        writer.add_scalar("train/grad_norm", float(grad_norm), state.step)
        if self.run_step.last_guided is not None:
            writer.add_scalar("train/guided_alignment", self.run_step.last_guided, state.step)
        if state.window_loss_tokens:
            mean_loss = state.window_loss / state.window_loss_tokens
            state.train_curve.append([state.step, mean_loss])
            writer.add_scalar("train/loss", mean_loss, state.step)
            writer.add_scalar("train/ppl", math.exp(min(mean_loss, 50.0)), state.step)
            progress.set_postfix(loss=f"{mean_loss:.3f}", tok_s=f"{tok_s:.0f}", lr=f"{lr:.2e}")
        state.window_tokens, state.window_loss, state.window_loss_tokens = 0, 0.0, 0

    def run(self) -> dict[str, Any]:
        """Train until a stop condition holds (rank 0 decides for every rank), evaluating every
        ``eval_every`` and checkpointing every ``save_every`` steps; then the final evaluation and, on rank 0,
        the test scores and results.json (other ranks return ``{"rank": r, "steps": n}``)."""
        tcfg, ctx, state = self.tcfg, self.ctx, self.state
        eval_every, log_every = int(tcfg.eval_every), int(tcfg.log_every)
        save_every = int(tcfg.get("save_every") or 0)
        if self.resumed is not None:  # last: building the model drew from the generators
            restore_rng(rank_rng_state(self.resumed, ctx, int(tcfg.seed)))
        last_evaluated = state.history[-1]["step"] if state.history else -1
        progress = tqdm(total=self.max_steps, initial=state.step, desc="train", unit="step", dynamic_ncols=True,
                        mininterval=2.0, disable=not ctx.is_main)
        window_start = time.time()
        self.model.train()
        with logging_redirect_tqdm():  # log lines (evaluations) print above the progress bar
            while True:
                seconds = time.time() - self.start
                reason, seconds = ctx.agree(self.stop_reason(seconds), seconds)  # rank 0 decides, for all ranks
                if reason is not None:
                    break
                _, _, batch = next(self.iterator)
                lr, grad_norm = self.train_step(batch.to(self.device), seconds)
                progress.update(1)
                if state.step % log_every == 0:
                    self.log_window(lr, grad_norm, time.time() - window_start, progress)
                    window_start = time.time()
                t_pause = time.time()
                if state.step % eval_every == 0:
                    if ctx.is_main:
                        self.evaluate()
                    last_evaluated = state.step
                    self.save_training_state()
                if save_every and state.step % save_every == 0:
                    self.save_training_state()
                window_start += time.time() - t_pause  # evaluations and saving are not training throughput
        progress.close()
        train_minutes = (time.time() - self.start) / 60
        if last_evaluated != state.step and ctx.is_main:
            self.evaluate()
        self.save_training_state()
        log.info("training stopped after %d steps, %.1f minutes: %s", state.step, train_minutes, reason)
        if self.iterator.skipped_small:
            log.info("passed over %d global batches with fewer sentences than the %d ranks",
                     self.iterator.skipped_small, ctx.world_size)
        if not ctx.is_main:
            return {"rank": ctx.rank, "steps": state.step}
        return self.test_and_report(reason, train_minutes)

    # ---- the end ---------------------------------------------------------------------------------------

    def test_and_report(self, reason: str, train_minutes: float) -> dict[str, Any]:
        """Score the best checkpoint on the test split; write test.hyp and results.json; -> the results."""
        state, model, ckpt_dir = self.state, self.model, self.ckpt_dir
        if not (ckpt_dir / "best.pt").is_file():  # resumed into a new directory, no gain since
            log.warning("no best.pt in %s: the final model is evaluated and saved as best.pt", ckpt_dir)
            save_checkpoint(ckpt_dir / "best.pt", self.payload(training_state=False))
        best = load_checkpoint(ckpt_dir / "best.pt")
        model.load_state_dict(best["model"])
        corpus = self.corpus
        test_src, test_tgt = corpus.test
        test_eval = Evaluator(test_src, test_tgt, self.tokenizer, corpus.tgt_lang, self.eval_batch,
                              corpus.max_src_pieces)
        test_scores, test_hyps, _ = test_eval.scores(model, self.device)
        write_atomic(self.run_dir / "test.hyp", "".join(h + "\n" for h in test_hyps).encode("utf-8"))
        self.writer.add_scalar("test/bleu", test_scores.bleu, state.step)
        self.writer.add_scalar("test/chrf", test_scores.chrf, state.step)
        self.writer.close()
        results = {
            "attention": self.model_config.attention,
            "decoder": self.model_config.decoder,
            "data": str(self.cfg.data.name),
            "seed": int(self.tcfg.seed),
            "tgt_lang": corpus.tgt_lang,
            "test_references": str(corpus.data_dir / "test.tgt"),
            "test_hypotheses": str(self.run_dir / "test.hyp"),
            "tokens_per_s": state.total_tokens / state.train_seconds if state.train_seconds else None,
            "wall_minutes": (time.time() - self.start) / 60,
            "steps": state.step,
            "world_size": self.ctx.world_size,
            "train_minutes": train_minutes,
            "stop_reason": reason,
            "skipped_steps": state.skipped_steps,
            "resumes": state.resumes,
            "best_step": int(best["step"]),
            "best_valid_bleu": state.best_bleu,
            "test_bleu": test_scores.bleu,
            "test_chrf": test_scores.chrf,
            "bleu_signature": test_scores.bleu_signature,
            "chrf_signature": test_scores.chrf_signature,
            "parameters": model.num_parameters(),
            "implementations": self.implementations.to_dict(),
            "history": state.history,
            "train_loss": state.train_curve,
            "checkpoint": str(ckpt_dir / "best.pt"),
        }
        write_atomic(self.run_dir / "results.json", json.dumps(results, indent=1).encode("utf-8"))
        log.info("best valid BLEU %.2f (step %d); test BLEU %.2f chrF %.2f  [%s]", state.best_bleu,
                 results["best_step"], test_scores.bleu, test_scores.chrf, test_scores.bleu_signature)
        return results
