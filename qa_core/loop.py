"""The training loop. It reads top to bottom: set-up, data, model, optimizer, then one
`for` loop over epochs and optimizer steps with evaluation, early stopping and
checkpoints written inline. Change it freely; every step is here.
"""
from __future__ import annotations

import contextlib
import json
import math
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from qa_core import checkpoint as ckpt
from qa_core.collate import LengthGroupedBatchSampler, QACollator
from qa_core.config import Config, ConfigError, load_config, to_dict, to_toml
from qa_core.data import read_examples, select_articles, split_by_article
from qa_core.distributed import (DistributedContext, evaluate_distributed, global_step_windows, init_distributed,
                                 no_sync_unless_last)
from qa_core.features import build_windows
from qa_core.metrics import qa_loss
from qa_core.modeling import load_model
from qa_core.optim import build_optimizer, build_scheduler, parameter_groups, warmup_steps_for
from qa_core.regularizers import EMA, freeze, rdrop_kl
from qa_core.tokenization import load_tokenizer
from qa_core.hub import resolve_model_dir


class TrainingStopped(RuntimeError):
    """The run cannot go on (e.g. too many non-finite losses in a row)."""


def run(cfg: Config, *, config_path: str | Path | None = None, resume: str | Path | None = None,
        stop_at_step: int | None = None) -> dict:
    """Fine-tune, evaluate, early-stop; returns the summary written to summary.json.

    stop_at_step acts like a Ctrl-C arriving after that optimizer step (tests use it to
    interrupt a run at an exact point and resume it).

    Under `torchrun --nproc_per_node N train.py ...` every process runs train() on its share
    of each batch (docs/distributed.md); in a single process `dist` changes nothing."""
    dist = init_distributed(pick_device(cfg.train.device))
    try:
        with dist.main_stdout_only():  # rank 0 prints; the other ranks keep stderr only
            summary = train(cfg, dist, config_path=config_path, resume=resume, stop_at_step=stop_at_step)
        dist.wait_for_all()  # not on errors: a failed rank must not leave the others waiting here
        return summary
    finally:
        dist.shutdown()  # an open process group makes the interpreter abort at exit


def train(cfg: Config, dist: DistributedContext, *, config_path=None, resume=None, stop_at_step=None) -> dict:
    # ------------------------------------------------------------------ run directory
    # Rank 0 creates it (its name may hold the time) and tells the others; only rank 0 writes files.
    run_dir = Path(dist.broadcast_object(str(prepare_run_dir(cfg, config_path, resume)) if dist.is_main else None))
    log = MetricsLog(run_dir / "metrics.jsonl", write_files=dist.is_main)
    resumed_state = ckpt.load_latest_checkpoint(run_dir) if resume else None  # every rank loads it
    if resumed_state is not None:
        check_same_world_size(run_dir, resumed_state, dist.world_size)
        log.truncate(resumed_state["metrics_lines"])  # drop events logged after the checkpoint

    # ------------------------------------------------------------------ device, seeds, precision
    device = dist.device  # train.device; cuda:LOCAL_RANK under torchrun
    seed_everything(cfg.train.seed, cfg.train.deterministic)  # the same seed on every rank: the same fresh head
    autocast_dtype = resolve_precision(cfg.train.precision, device)
    autocast = (lambda: torch.autocast(device.type, dtype=autocast_dtype)) if autocast_dtype else contextlib.nullcontext
    # fp16 needs loss scaling so small gradients do not underflow; bf16 and fp32 do not.
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)

    # ------------------------------------------------------------------ data
    model_dir = resolve_model_dir(cfg.model.name_or_path, revision=cfg.model.revision, cache_dir=cfg.model.cache_dir)
    tokenizer = load_tokenizer(str(model_dir))
    train_examples, val_examples = load_examples(cfg)
    window_args = dict(max_seq_length=cfg.data.max_seq_length, doc_stride=cfg.data.doc_stride,
                       max_query_length=cfg.data.max_query_length, cache_dir=cfg.data.cache_dir or None)
    train_windows = build_windows(train_examples, tokenizer, negative_keep_fraction=cfg.data.negative_keep_fraction,
                                  seed=cfg.train.seed, **window_args)
    val_windows = build_windows(val_examples, tokenizer, **window_args)
    # A fixed sample of training examples, evaluated exactly like validation: the honest train accuracy.
    train_eval_examples = fixed_subset(train_examples, cfg.eval.train_subset_examples, cfg.train.seed)
    train_eval_windows = build_windows(train_eval_examples, tokenizer, **window_args) if train_eval_examples else None
    log.write({"event": "data", "train_examples": len(train_examples), "train_windows": len(train_windows),
               "val_examples": len(val_examples), "val_windows": len(val_windows),
               "train_eval_examples": len(train_eval_examples)}, resumed=resumed_state is not None)

    # ------------------------------------------------------------------ model
    dropout = {k: v for k, v in vars(cfg.model.dropout).items() if v is not None}
    model = load_model(str(model_dir), dropout=dropout).to(device)
    print(f"model: {cfg.model.name_or_path} ({model.config.model_type}, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters), dropout {model.dropout_report()}")
    for line in getattr(model.load_report, "messages", lambda: [])():
        print(f"  {line}")
    reg = cfg.regularization
    if reg.freeze_embeddings or reg.freeze_layers:
        frozen = freeze(model, embeddings=reg.freeze_embeddings, first_layers=reg.freeze_layers)
        print(f"frozen: {len(frozen)} parameter tensors (embeddings: {reg.freeze_embeddings}, "
              f"first {reg.freeze_layers} layers)")

    # ------------------------------------------------------------------ batches, optimizer, schedule
    accum = cfg.train.grad_accum_steps
    train_pieces = resolve_micro_batch(cfg.train.micro_batch_size, device, "train")
    eval_pieces = resolve_micro_batch(cfg.eval.micro_batch_size, device, "eval")
    if dist.is_main and (train_pieces or eval_pieces):
        print(f"pieces of at most {train_pieces or cfg.train.batch_size} training / "
              f"{eval_pieces or cfg.eval.batch_size} evaluation windows per forward pass")
    paraphrases = None
    if cfg.augment.enabled:
        from qa_core.augment import augment_examples, load_paraphrases  # only needed when augmenting
        paraphrases = load_paraphrases(cfg.augment.paraphrase_file) if cfg.augment.paraphrase_file else None

    def epoch_batches(epoch: int):
        """This epoch's micro-batches (lists of window indices) and the collator for them.
        With augmentation on, the training examples are re-drawn from (seed, epoch) first."""
        windows = train_windows
        if cfg.augment.enabled:
            a = cfg.augment
            examples = augment_examples(
                train_examples, seed=cfg.train.seed, epoch=epoch, question_word_dropout=a.question_word_dropout,
                question_swap=a.question_swap, paraphrase_prob=a.paraphrase_prob, paraphrases=paraphrases,
                context_word_dropout=a.context_word_dropout, context_sentence_dropout=a.context_sentence_dropout)
            windows = build_windows(examples, tokenizer, negative_keep_fraction=cfg.data.negative_keep_fraction,
                                    seed=cfg.train.seed + epoch, **{**window_args, "cache_dir": None})
        # Under torchrun a global batch holds batch_size windows per rank; rank r takes global_batch[r::N].
        sampler = LengthGroupedBatchSampler(windows.lengths, cfg.train.batch_size, seed=cfg.train.seed,
                                            shuffle=cfg.train.shuffle, group_by_length=cfg.train.group_by_length,
                                            num_replicas=dist.world_size, rank=dist.rank)
        sampler.set_epoch(epoch)
        collate = QACollator(windows, use_token_type_ids=model.uses_token_type_ids,
                             pad_to_multiple_of=cfg.train.pad_to_multiple_of or None)
        global_batch_sizes = [len(b) for b in sampler.global_batches()]  # windows of all ranks per batch
        return list(sampler), global_batch_sizes, collate

    # Augmentation changes the window count a little per epoch; the schedule uses the clean count.
    steps_per_epoch = math.ceil(math.ceil(len(train_windows) / (cfg.train.batch_size * dist.world_size)) / accum)
    total_steps = steps_per_epoch * cfg.train.epochs
    if cfg.train.max_steps:
        total_steps = min(total_steps, cfg.train.max_steps)
    groups = parameter_groups(model, cfg.optim.weight_decay, cfg.optim.lr, layer_decay=reg.layerwise_lr_decay)
    optimizer = build_optimizer(groups, lr=cfg.optim.lr,
                                betas=(cfg.optim.beta1, cfg.optim.beta2), eps=cfg.optim.eps, device=device)
    warmup = warmup_steps_for(total_steps, cfg.schedule.warmup_steps, cfg.schedule.warmup_ratio)
    scheduler = build_scheduler(optimizer, name=cfg.schedule.name, total_steps=total_steps, warmup_steps=warmup)
    ema = EMA(model, reg.ema_decay) if reg.ema_decay else None

    # ------------------------------------------------------------------ state (fresh or resumed)
    state = TrainState()
    early = EarlyStopping(cfg.early_stopping.metric, cfg.early_stopping.mode, cfg.early_stopping.patience,
                          cfg.early_stopping.min_delta)
    if resumed_state is not None:
        model.load_state_dict(resumed_state["model"])
        optimizer.load_state_dict(resumed_state["optimizer"])
        scheduler.load_state_dict(resumed_state["scheduler"])
        scaler.load_state_dict(resumed_state["scaler"])
        state = TrainState(**resumed_state["train_state"])
        early.load_state_dict(resumed_state["early_stopping"])
        if ema is not None:
            ema.load_state_dict(resumed_state["ema"])
        ckpt.set_rng_state(resumed_state["rng_per_rank"][dist.rank] if dist.enabled else resumed_state["rng"])
        print(f"resumed from step {state.step} (epoch {state.epoch}, batch {state.batches_done})")
    # DDP under torchrun (it all-reduces the gradients during backward); `model` stays the raw
    # module for evaluation, EMA and saving. In a single process train_model is model.
    train_model = dist.wrap_model(model)

    def run_evaluation() -> dict:
        """Validation and the fixed training subset, both in eval mode, with the EMA weights
        when EMA is on; logged, checked for a new best (whose weights are kept), returned."""
        if ema is not None:
            ema.swap(model)
        eval_args = dict(batch_size=cfg.eval.batch_size, piece_size=eval_pieces, device=device,
                         autocast_dtype=autocast_dtype,
                         n_best=cfg.eval.n_best, max_answer_length=cfg.eval.max_answer_length,
                         version_2=cfg.data.version_2, null_threshold=cfg.eval.null_threshold)
        record = {"event": "eval", "step": state.step, "epoch": state.epoch}
        timing = {}
        for split, windows, examples in (("val", val_windows, val_examples),
                                         ("train", train_eval_windows, train_eval_examples)):
            if windows is None:
                continue
            # Under torchrun each rank runs a share of the batches, rank 0 scores, every rank gets the numbers.
            result = evaluate_distributed(dist, model, windows, examples, progress=cfg.train.progress and dist.is_main,
                                          **eval_args)
            record.update({f"{split}_{k}": v for k, v in result.items() if isinstance(v, (int, float))})
            timing[split] = result.get("timings", {})
        log.write({**record, "timing": timing})
        state.last_eval_step = state.step
        if early.update(record, state.step, model):
            print(f"  new best {early.metric} = {record[early.metric]:.4f} at step {state.step}")
        if ema is not None:
            ema.swap(model)
        model.train()
        return record

    def save_resumable() -> Path | None:
        """Every rank calls it (each rank's RNG state goes in); rank 0 writes."""
        rng = dist.gather_object(ckpt.rng_state())
        if not dist.is_main:
            return None
        ranks = {"rng_per_rank": rng, "world_size": dist.world_size} if dist.enabled else {}
        return ckpt.save_checkpoint(run_dir, state.step, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "train_state": vars(state).copy(), "early_stopping": early.state_dict(),
            "rng": rng[0], **ranks, "metrics_lines": log.lines, "config": to_dict(cfg),
            "ema": ema.state_dict() if ema is not None else None,
        }, keep_last=cfg.checkpoint.keep_last)

    # ------------------------------------------------------------------ training
    stop = StopSignal()
    if resumed_state is None and cfg.eval.at_start:
        run_evaluation()
    model.train()
    finished_reason = "completed"
    with stop.installed():
        for epoch in range(state.epoch, cfg.train.epochs):
            state.epoch = epoch
            batches, global_batch_sizes, collate = epoch_batches(epoch)
            progress = make_progress(cfg, steps_per_epoch, epoch, done=state.batches_done // accum, show=dist.is_main)
            window_clock, windows_seen = time.perf_counter(), 0
            for first in range(state.batches_done, len(batches), accum):
                micro_batches = batches[first:first + accum]
                # Normalise by the windows of the whole optimizer step, on all ranks (a short last
                # step has fewer): summed over micro-batches and ranks this is exactly the big
                # batch's mean loss.
                step_windows = global_step_windows(global_batch_sizes, first, accum)
                step_clock, step_cpu_clock = time.perf_counter(), time.process_time()
                step_loss = torch.zeros((), device=device)
                pieces = [piece for indices in micro_batches
                          for piece in split_batch(indices, train_pieces, collate.windows.lengths)]
                for i, indices in enumerate(pieces):
                    # A rank left without windows by the ragged last batch of an epoch runs window 0
                    # at weight 0: every rank must join DDP's gradient all-reduce.
                    weight = 1.0 if len(indices) else 0.0
                    # Under DDP only the last piece of a step all-reduces the gradients.
                    with no_sync_unless_last(train_model, is_last=i == len(pieces) - 1):
                        batch = {k: v.to(device, non_blocking=True) for k, v in collate(indices or [0]).items()}
                        inputs = (batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
                        targets = (batch["start_positions"], batch["end_positions"])
                        with autocast():
                            start_logits, end_logits = train_model(*inputs)
                        loss = qa_loss(start_logits.float(), end_logits.float(), *targets,
                                       attention_mask=batch["attention_mask"], label_smoothing=reg.label_smoothing,
                                       reduction="sum")
                        if reg.rdrop_alpha:
                            # R-Drop: a second pass sees other dropout masks; both passes learn the
                            # labels and are pulled towards the same span distributions.
                            with autocast():
                                start_b, end_b = train_model(*inputs)
                            loss_b = qa_loss(start_b.float(), end_b.float(), *targets,
                                             attention_mask=batch["attention_mask"],
                                             label_smoothing=reg.label_smoothing, reduction="sum")
                            loss = (loss + loss_b) / 2 + reg.rdrop_alpha * rdrop_kl(
                                start_logits, end_logits, start_b, end_b, batch["attention_mask"])
                        loss = loss / step_windows
                        if not weight:
                            loss = loss * weight
                        # DDP averages the gradients over ranks: times world_size makes that their sum.
                        scaler.scale(loss * dist.world_size).backward()
                    step_loss += loss.detach()
                state.batches_done = first + len(micro_batches)
                windows_seen += step_windows  # all ranks' windows
                # One all-reduce gives every rank the global loss (so the same non-finite decision)
                # and whether any rank got Ctrl-C / SIGTERM (so all stop after the same step).
                stop_now = stop.requested
                if dist.enabled:
                    summed = dist.all_reduce_sum(torch.stack([step_loss, torch.tensor(float(stop_now), device=device)]))
                    step_loss, stop_now = summed[0], bool(summed[1] > 0)

                # A non-finite loss skips the step (no update, schedule paused) and is counted.
                loss_value = step_loss.item()
                if not math.isfinite(loss_value):
                    optimizer.zero_grad(set_to_none=True)
                    state.nonfinite_total += 1
                    state.nonfinite_in_row += 1
                    log.write({"event": "nonfinite_loss", "step": state.step, "epoch": epoch, "loss": str(loss_value)})
                    if state.nonfinite_in_row >= cfg.train.max_nonfinite_in_row:
                        save_resumable()
                        raise TrainingStopped(
                            f"{state.nonfinite_in_row} non-finite losses in a row at step {state.step}: "
                            "lower optim.lr, use precision fp32 or bf16 instead of fp16, or check the data")
                    continue
                state.nonfinite_in_row = 0

                scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
                grad_norm = torch.nn.utils.clip_grad_norm_(
                    model.parameters(), cfg.optim.max_grad_norm if cfg.optim.max_grad_norm > 0 else float("inf"))
                scale_before = scaler.get_scale() if scaler.is_enabled() else 1.0
                scaler.step(optimizer)
                scaler.update()
                if scaler.is_enabled() and scaler.get_scale() < scale_before:
                    state.scaler_skipped_steps += 1  # fp16 overflow: GradScaler skipped this update
                lr = max(scheduler.get_last_lr())  # the full-rate group (others are layer-decayed)
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                if ema is not None:
                    ema.update(model)
                state.step += 1
                state.train_seconds += time.perf_counter() - step_clock  # optimizer work only, no eval
                state.train_cpu_seconds += time.process_time() - step_cpu_clock  # all threads; robust to load
                state.windows_trained += step_windows
                progress.update(1)

                if state.step % cfg.train.log_every == 0:
                    elapsed = time.perf_counter() - window_clock
                    log.write({"event": "train", "step": state.step, "epoch": epoch, "loss": loss_value, "lr": lr,
                               "grad_norm": float(grad_norm), "timing": {"windows_per_s": windows_seen / elapsed}})
                    progress.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}",
                                         win_s=f"{windows_seen / elapsed:.1f}")
                    window_clock, windows_seen = time.perf_counter(), 0
                if cfg.eval.every_steps and state.step % cfg.eval.every_steps == 0:
                    run_evaluation()
                if cfg.checkpoint.every_steps and state.step % cfg.checkpoint.every_steps == 0:
                    save_resumable()
                if early.should_stop(cfg.early_stopping.enabled) or state.step == cfg.train.max_steps:
                    break
                if stop_now or state.step == stop_at_step:
                    path = save_resumable()
                    progress.close()
                    print(f"\nstopped at step {state.step}; resumable checkpoint: {path}\n"
                          f"continue with: {dist.launcher()} train.py --resume {run_dir}")
                    log.write({"event": "interrupted", "step": state.step, "epoch": epoch})
                    dist.barrier()  # no rank returns before rank 0's files are complete
                    return {"interrupted": True, "run_dir": str(run_dir), "step": state.step}
            progress.close()

            # End of an epoch (or an early break): evaluate, then decide whether to go on.
            if early.should_stop(cfg.early_stopping.enabled):
                finished_reason = f"early stopping: {early.metric} did not improve for {early.patience} evaluations"
                break
            if state.step == cfg.train.max_steps:
                finished_reason = f"train.max_steps = {cfg.train.max_steps} reached"
                break
            state.epoch, state.batches_done = epoch + 1, 0
            if cfg.eval.every_epoch and state.last_eval_step != state.step:
                run_evaluation()
            if cfg.checkpoint.every_epoch:
                save_resumable()
            if early.should_stop(cfg.early_stopping.enabled):
                finished_reason = f"early stopping: {early.metric} did not improve for {early.patience} evaluations"
                break

    # ------------------------------------------------------------------ finish
    if state.last_eval_step != state.step:
        run_evaluation()
    saved = any(p.name == f"checkpoint-{state.step}.pt" for p in ckpt.list_checkpoints(run_dir))
    if not dist.broadcast_object(saved):  # rank 0's files decide, for every rank
        save_resumable()  # the final state, e.g. to continue with more epochs later
    end_record = log.last("eval")
    if cfg.early_stopping.enabled and cfg.early_stopping.restore_best and early.best_state is not None:
        model.load_state_dict(early.best_state)
        print(f"restored the best weights: {early.metric} = {early.best_value:.4f} at step {early.best_step}")
    if cfg.checkpoint.save_best and dist.is_main:
        best_model = model
        if early.best_state is not None and not (cfg.early_stopping.enabled and cfg.early_stopping.restore_best):
            best_model = load_model(str(model_dir), dropout=dropout)
            best_model.load_state_dict(early.best_state)
        best_model.save_pretrained(run_dir / "best", tokenizer_dir=model_dir)
    summary = write_summary(run_dir, log, early, state, finished_reason, end_record, write_file=dist.is_main)
    log.write({"event": "end", "step": state.step, "reason": finished_reason,
               "nonfinite_skipped": state.nonfinite_total, "scaler_skipped": state.scaler_skipped_steps})
    print_before_after(summary)
    from qa_core.plots import plot_run  # matplotlib is optional: plot_run says how to get it
    if dist.is_main:
        try:
            plot_run(run_dir)
        except Exception as err:  # a plot must never fail a finished run
            print(f"warning: could not draw {run_dir / 'curves.png'}: {err}")
    dist.barrier()  # no rank returns before rank 0's files are complete
    return summary


# ---------------------------------------------------------------------------- helpers


@dataclass
class TrainState:
    """Where the loop is; saved in every checkpoint so a resumed run continues exactly."""
    epoch: int = 0
    batches_done: int = 0  # micro-batches of the current epoch already consumed
    step: int = 0  # optimizer steps taken
    last_eval_step: int = -1
    nonfinite_in_row: int = 0
    nonfinite_total: int = 0
    scaler_skipped_steps: int = 0
    train_seconds: float = 0.0
    train_cpu_seconds: float = 0.0
    windows_trained: int = 0  # all ranks' windows


@dataclass
class EarlyStopping:
    """Tracks the best value of one reported metric and a copy of the best weights."""
    metric: str
    mode: str
    patience: int
    min_delta: float
    best_value: float | None = None
    best_step: int = -1
    bad_evaluations: int = 0
    best_state: dict | None = field(default=None, repr=False)

    def update(self, record: dict, step: int, model: torch.nn.Module) -> bool:
        if self.metric not in record:
            raise ConfigError(f"early_stopping.metric {self.metric!r} is not in the evaluation "
                              f"(reported: {', '.join(k for k in record if k not in ('event', 'step', 'epoch'))})")
        value = float(record[self.metric])
        if self.best_value is None:
            improved = True
        elif self.mode == "min":
            improved = value < self.best_value - self.min_delta
        else:
            improved = value > self.best_value + self.min_delta
        if improved:
            self.best_value, self.best_step, self.bad_evaluations = value, step, 0
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            self.bad_evaluations += 1
        return improved

    def should_stop(self, enabled: bool) -> bool:
        return enabled and self.bad_evaluations >= self.patience

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)


class MetricsLog:
    """metrics.jsonl: one JSON object per event. Wall-clock figures live under "timing"
    so that everything else is reproducible (a resumed run writes identical records)."""

    def __init__(self, path: Path, write_files: bool = True):
        self.path = path
        self.write_files = write_files  # False on ranks other than 0: records in memory only
        self.records: list[dict] = []
        if path.exists():
            self.records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    @property
    def lines(self) -> int:
        return len(self.records)

    def truncate(self, n: int) -> None:
        self.records = self.records[:n]
        if self.write_files:
            self.path.write_text("".join(json.dumps(r) + "\n" for r in self.records))

    def write(self, record: dict, resumed: bool = False) -> None:
        if resumed and record["event"] == "data":
            return  # already logged by the interrupted run
        self.records.append(record)
        if self.write_files:
            with open(self.path, "a") as fh:
                fh.write(json.dumps(record) + "\n")

    def last(self, event: str) -> dict | None:
        return next((r for r in reversed(self.records) if r["event"] == event), None)


class StopSignal:
    """First Ctrl-C / SIGTERM: finish the current step, save a checkpoint, exit cleanly.
    A second Ctrl-C interrupts at once."""

    def __init__(self):
        self.requested = False

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n{signal.Signals(signum).name}: saving a resumable checkpoint after this step "
              "(Ctrl-C again to abort now)")

    @contextlib.contextmanager
    def installed(self):
        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def prepare_run_dir(cfg: Config, config_path, resume) -> Path:
    if resume:
        run_dir = Path(resume)
        if not (run_dir / "config.toml").exists():
            raise FileNotFoundError(f"--resume {run_dir}: not a run directory (no config.toml in it)")
        return run_dir
    name = cfg.run.name or f"{Path(config_path).stem if config_path else 'run'}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(cfg.run.output_dir) / name
    if run_dir.exists() and any(run_dir.iterdir()):
        if not cfg.run.overwrite:
            raise FileExistsError(f"run directory {run_dir} exists: choose another run.name, "
                                  f"set run.overwrite=true, or continue it with --resume {run_dir}")
        import shutil
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.toml").write_text(to_toml(cfg))
    return run_dir


def check_same_world_size(run_dir: Path, resumed_state: dict, world_size: int) -> None:
    saved = resumed_state.get("world_size", 1)
    if saved != world_size:
        raise ConfigError(f"--resume {run_dir}: its checkpoint was written by {saved} process(es), this run has "
                          f"{world_size}; resume with as many (torchrun --nproc_per_node {saved} on one node): "
                          "the process count decides which windows make up each step")


def config_for_resume(run_dir: str | Path) -> Config:
    return load_config(Path(run_dir) / "config.toml")


# Auto (0) piece sizes on CPU: peak memory follows the piece, and smaller GEMMs were no slower
# there (MiniLM, 384 tokens, 2 threads: training 18.2 windows/s in pieces of 4 vs 16.8 whole
# batches of 16, peak RSS 1442 vs 2357 MiB; evaluation faster in pieces of 16 than 64).
CPU_PIECES = {"train": 4, "eval": 16}


def resolve_micro_batch(size: int, device: torch.device, kind: str) -> int:
    """Windows per forward pass for train.micro_batch_size / eval.micro_batch_size: the value
    given, or for 0 (auto) CPU_PIECES on CPU and 0 (the whole batch) elsewhere."""
    if size:
        return size
    return CPU_PIECES[kind] if device.type == "cpu" else 0


def split_batch(indices: list[int], piece_size: int, lengths) -> list[list[int]]:
    """A batch's windows in pieces of at most piece_size (0: one piece), shortest first so each
    piece pads only to its own longest window. An empty batch stays one empty piece."""
    if not piece_size or len(indices) <= piece_size:
        return [indices]
    ordered = sorted(indices, key=lambda i: (int(lengths[i]), i))
    return [ordered[i:i + piece_size] for i in range(0, len(ordered), piece_size)]


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device = 'cuda' but no CUDA device is visible; use train.device=cpu or auto")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        import os
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def cpu_has_fast_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None = plain fp32). Weights and optimizer state stay fp32."""
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "bf16" if cpu_has_fast_bf16() else "fp32"
    if precision == "fp32":
        return None
    if precision == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError("train.precision = 'bf16' but this GPU has no bf16 support; use fp16 or auto")
        return torch.bfloat16
    return torch.float16


def load_examples(cfg: Config):
    """Training and validation examples: two files, article ranges of one file, or a split."""
    d = cfg.data
    train = read_examples(d.train_file, on_error=d.on_error).examples
    if d.train_articles:
        train = select_articles(train, d.train_articles)
    if d.val_file:
        val = read_examples(d.val_file, on_error=d.on_error).examples
        if d.val_articles:
            val = select_articles(val, d.val_articles)
    elif d.val_articles:
        val = select_articles(read_examples(d.train_file, on_error=d.on_error).examples, d.val_articles)
    else:
        train, val = split_by_article(train, d.val_fraction, d.split_seed)
    if d.max_train_examples:
        train = train[:d.max_train_examples]
    if d.max_val_examples:
        val = val[:d.max_val_examples]
    if not train or not val:
        raise ConfigError(f"no {'training' if not train else 'validation'} examples: check data.train_file, "
                          "data.val_file and the article selections")
    return train, val


def fixed_subset(examples: list, n: int, seed: int) -> list:
    if n <= 0:
        return []
    if n >= len(examples):
        return list(examples)
    picked = np.sort(np.random.default_rng(seed).choice(len(examples), size=n, replace=False))
    return [examples[i] for i in picked]


def make_progress(cfg: Config, steps_per_epoch: int, epoch: int, done: int, show: bool = True):
    from tqdm.auto import tqdm

    return tqdm(total=steps_per_epoch, initial=done, desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
                disable=not (cfg.train.progress and show), dynamic_ncols=True, leave=False)


TABLE_COLUMNS = (("train acc", "train_token_acc"), ("val acc", "val_token_acc"), ("val loss", "val_loss"),
                 ("EM", "val_exact"), ("F1", "val_f1"))


def write_summary(run_dir: Path, log: MetricsLog, early: EarlyStopping, state: TrainState, reason: str,
                  end_record: dict | None, write_file: bool = True) -> dict:
    evals = [r for r in log.records if r["event"] == "eval"]
    best = next((r for r in evals if r["step"] == early.best_step), None)

    def row(record):
        return None if record is None else {k: v for k, v in record.items() if k not in ("event", "timing")}

    summary = {"run_dir": str(run_dir), "reason": reason, "steps": state.step,
               "best_metric": early.metric, "best_value": early.best_value, "best_step": early.best_step,
               "start": row(evals[0]) if evals and evals[0]["step"] == 0 else None,
               "best": row(best), "end": row(end_record),
               "nonfinite_skipped": state.nonfinite_total, "scaler_skipped": state.scaler_skipped_steps,
               "timing": {"train_seconds": state.train_seconds, "train_cpu_seconds": state.train_cpu_seconds,
                          "windows_trained": state.windows_trained,
                          "train_windows_per_s": state.windows_trained / max(state.train_seconds, 1e-9),
                          "peak_rss_mib": peak_rss_mib()}}
    if write_file:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB, macOS bytes)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def print_before_after(summary: dict) -> None:
    header = f"{'':<14}" + "".join(f"{title:>11}" for title, _ in TABLE_COLUMNS)
    lines = [header]
    for label in ("start", "best", "end"):
        record = summary.get(label)
        if record is None:
            continue
        tag = f"{label} (step {record['step']})"
        # Losses as they are; accuracies (fractions) and EM/F1 (percent) all shown in percent.
        cells = "".join(f"{record.get(key, float('nan')):>11.4f}" if "loss" in key
                        else f"{100 * record.get(key, float('nan')):>11.2f}" if "acc" in key
                        else f"{record.get(key, float('nan')):>11.2f}" for _, key in TABLE_COLUMNS)
        lines.append(f"{tag:<14}{cells}")
    print("\n" + "\n".join(lines))
    timing = summary["timing"]
    print(f"({summary['reason']}; best {summary['best_metric']} at step {summary['best_step']}; "
          f"{timing['train_windows_per_s']:.1f} train windows/s; peak RSS {timing['peak_rss_mib']:.0f} MiB; "
          f"run directory {summary['run_dir']})")
