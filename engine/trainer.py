"""The training loop: one loop for every model family.

A family's model returns a mapping of named losses from ``forward(batch)``; the loop sums them
with the profile's weights and does the rest: AdamW, the learning-rate schedule, AMP, gradient
clipping and accumulation, validation, early stopping, checkpoints, throughput, and the commands a
dashboard sends while it runs (pause, resume, stop, save now, set learning rate).

Exactness is a design goal: ``podium resume`` must reproduce the numbers of an uninterrupted run.
So the data order is a pure function of (seed, epoch), the learning rate a pure function of the
step, every RNG is checkpointed, and nothing the loop does for display (validation, logging)
draws from the global RNGs.

Host syncs: losses stay on the device and are read in one batch every ``log_every_steps`` steps.
A non-finite loss or gradient must never reach the weights: on the CPU the loop reads the
gradient norm every step and skips ``optimizer.step()``; on a GPU it reads nothing, the fused
AdamW kernel is handed the "found inf" flag as a device tensor (the protocol GradScaler uses for
fused optimizers) and skips the update itself, and the loop counts skipped steps when it reads
the losses. So a GPU step has no host sync; the ``max_nonfinite_steps`` check then happens at
the next read, at most ``log_every_steps`` steps late.

GPU fast path, besides: fused AdamW, bf16 autocast (``precision = "auto"``), TF32 for the
float32 matmuls (``tf32``), pinned host memory with DataLoader workers sized from the CPUs the run
may use (``num_workers = -1``), optional ``torch.compile`` (``compile``, ``compile_mode``; its
"reduce-overhead" mode adds CUDA graphs). MFU is published with the throughput when the device's
peak is known (``podium.engine.mfu``).
"""

from __future__ import annotations

import contextlib
import math
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data._utils.collate import default_collate

from podium.engine.checkpoints import (
    Checkpointer,
    CheckpointInfo,
    NonFiniteWeights,
    capture_rng,
    list_checkpoints,
    restore_rng,
    strip_wrapper_prefixes,
)
from podium.engine.cpu_share import loader_workers
from podium.engine.errors import DataError
from podium.engine.events import (
    CheckpointDeleted,
    CheckpointSaved,
    EvalMetrics,
    EventBus,
    Message,
    Scalars,
    StateChanged,
    StepMetrics,
)
from podium.engine.metrics import MetricValues, ValidationMetrics, split_output
from podium.engine.mfu import count_flops, mfu, peak_flops
from podium.engine.schedules import LRSchedule
from podium.engine.train_config import TrainConfig

if TYPE_CHECKING:
    from podium.engine.distributed import RankGroup
    from podium.engine.series import Direction


@dataclass
class TrainState:
    """The loop's own counters; everything else in a checkpoint belongs to a component."""

    step: int = 0
    """Optimizer steps done."""
    epoch: int = 0
    """Epochs completed."""
    batch_in_epoch: int = 0
    """Optimizer steps done inside the current epoch (the sampler position on resume)."""
    tokens_seen: int = 0
    samples_seen: int = 0
    best_val: float = math.inf
    best_metrics: dict[str, float] = field(default_factory=dict)
    """The best value so far of each metric that keeps a ``best-<metric>`` checkpoint."""
    evals_without_improvement: int = 0
    nonfinite_in_a_row: int = 0


Outcome = Literal["finished", "stopped", "failed"]


@dataclass(frozen=True)
class TrainResult:
    status: Outcome
    reason: str
    step: int


class _Stop(Exception):
    """Raised inside the loop to end it with a status."""

    def __init__(self, status: Outcome, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class _Command:
    kind: str
    arg: Any = None
    future: Future = field(default_factory=Future)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DataError(f"train.device: {name!r} requested but CUDA is not available here")
    return torch.device(name)


def pick_precision(requested: str, device: torch.device) -> tuple[torch.dtype | None, str]:
    """The autocast dtype (None = fp32) and a note when a request cannot be honoured."""
    if device.type != "cuda":
        note = (
            f"precision {requested} is CUDA-only; training in fp32 on CPU"
            if requested in ("bf16", "fp16")
            else ""
        )
        return None, note
    if requested == "fp32":
        return None, ""
    if requested == "bf16" or (requested == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16, ""
    return torch.float16, ""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Trains one model of any family. Commands are thread-safe; ``train()`` runs in one thread."""

    def __init__(
        self,
        *,
        model: torch.nn.Module,
        train_set: Dataset,
        val_set: Dataset | None,
        cfg: TrainConfig,
        loss_weights: Mapping[str, float],
        checkpointer: Checkpointer | None,
        bus: EventBus | None = None,
        device: torch.device | None = None,
        max_steps: int | None = None,
        max_epochs: int | None = None,
        extra_state: Mapping[str, Any] | None = None,
        save_every_steps: int = 0,
        before_checkpoint: Callable[[], None] | None = None,
        group: RankGroup | None = None,
        metrics: Callable[[], ValidationMetrics] | None = None,
        best_metrics: Mapping[str, Direction] | None = None,
    ) -> None:
        self.cfg = cfg
        self.device = device or pick_device(cfg.device)
        self.model = model.to(self.device)
        self.group = group
        """Set in a DDP run (see podium.engine.distributed): this process is one rank of several."""
        self.lead = group is None or group.is_lead
        """Whether this process publishes, validates and checkpoints (rank 0, or the only one)."""
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
            torch.backends.cudnn.allow_tf32 = cfg.tf32
        self.net = group.wrap(self.model) if group is not None else self.model
        """What the loop trains through (the DDP wrapper in a DDP run, compiled when the profile
        asks); ``model`` stays the bare module, so checkpoints have no ``module.`` prefix and
        load anywhere."""
        if cfg.compile:
            self.net = torch.compile(self.net, mode=cfg.compile_mode)
        self.train_set = train_set
        self.val_set = val_set
        self.weights = dict(loss_weights)
        self.head_names = list(self.weights)
        self.checkpointer = checkpointer
        self.bus = bus or EventBus()
        self.max_steps = max_steps
        self.max_epochs = max_epochs
        self.extra_state = dict(extra_state or {})
        self.save_every_steps = save_every_steps
        self.before_checkpoint = before_checkpoint
        self.metrics = metrics
        """Makes a fresh accumulator of the family's validation metrics for each pass."""
        self.best_metrics = dict(best_metrics or {})
        """Validation metrics that keep their own best checkpoint, with the way each improves."""
        self._improved_metrics: dict[str, float] = {}
        self.on_epoch_end: Callable[[], dict[str, float] | None] | None = None
        """Called on the training thread after each epoch's validation (rank 0 only); the
        values it returns are published as ``Scalars`` (the conditioning check uses this)."""
        """Called before each checkpoint is written; the session makes the store durable here
        so that after a crash the history on disk always reaches the newest checkpoint."""

        micro = len(train_set) // cfg.batch_size
        self.steps_per_epoch = micro // cfg.grad_accum
        if self.steps_per_epoch < 1:
            raise DataError(
                f"train split has {len(train_set)} examples, fewer than one optimizer step needs "
                f"(train.batch_size {cfg.batch_size} x train.grad_accum {cfg.grad_accum})"
            )
        self.total_steps = cfg.epochs * self.steps_per_epoch

        self.amp_dtype, precision_note = pick_precision(cfg.precision, self.device)
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype is torch.float16
        )
        groups = _optimizer_groups(model, cfg.weight_decay)
        fused = self.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(
            groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, fused=fused or None
        )
        self.schedule = LRSchedule(
            kind=cfg.schedule,
            base_lr=cfg.lr,
            warmup_steps=cfg.warmup_steps,
            total_steps=self.total_steps,
            min_lr_ratio=cfg.min_lr_ratio,
        )
        self.state = TrainState()
        self.log_every = cfg.log_every_steps or (10 if self.device.type == "cuda" else 1)
        self.skip_on_device = fused and self.amp_dtype is not torch.float16 and group is None
        """Non-finite updates skipped by the fused optimizer from a device flag (no host sync).
        fp16 leaves it to GradScaler, which does the same; a DDP run reads the flag every step,
        so that every rank ends at the same step (it syncs per step for the commands anyway)."""
        self.world = group.world if group is not None else 1
        self.peak_flops = peak_flops(self.device)
        """The device's peak FLOP/s (None: unknown, no MFU); a DDP run has ``world`` of them."""
        self.flops_per_token: float | None = None
        """Training FLOPs per token, counted on this process's first batch when MFU is wanted."""

        self._commands: queue.SimpleQueue[_Command] = queue.SimpleQueue()
        self._paused = False
        self._stop: tuple[Outcome, str] | None = None
        self._pending: list[tuple[int, float, torch.Tensor]] = []
        self._window_start = time.perf_counter()
        self._window_tokens = 0
        self._window_samples = 0
        self._step_time_ema: float | None = None
        self._epoch_iter: Iterator[Any] | None = None
        self._lock = threading.Lock()
        self.run_state = "starting"
        if precision_note:
            self._message("warning", precision_note)

    # ---------------------------------------------------------------------------------------
    # Commands (any thread)

    def pause(self) -> Future:
        return self._submit("pause")

    def resume(self) -> Future:
        return self._submit("resume")

    def stop(self, reason: str = "stopped by user") -> Future:
        return self._submit("stop", reason)

    def save_now(self) -> Future:
        return self._submit("save")

    def set_lr(self, lr: float) -> Future:
        if not (lr > 0 and math.isfinite(lr)):
            fut: Future = Future()
            fut.set_exception(ValueError(f"learning rate must be a positive number (got {lr})"))
            return fut
        return self._submit("set_lr", float(lr))

    def snapshot_weights(self) -> Future:
        """A CPU copy of the model's weights taken between two steps: ``(step, state_dict)``.

        For previews from the live weights: the copy is made on the training thread at a step
        boundary (never a half-updated tensor), costs one copy of the parameters, and touches no
        RNG."""
        return self._submit("weights")

    def _submit(self, kind: str, arg: Any = None) -> Future:
        cmd = _Command(kind, arg)
        self._commands.put(cmd)
        return cmd.future

    def _serve_commands(self) -> None:
        """The step boundary: apply queued commands; while paused, wait here."""
        if self.group is not None:
            self._serve_commands_ddp()
        else:
            self._serve_queue()

    def _serve_queue(self, *, block: bool = True) -> None:
        """Apply queued commands; while paused, wait here (still serving save and set_lr).

        ``block=False`` only drains the queue, even when paused (a DDP rank 0 first tells the
        other ranks about the pause, then waits)."""
        while True:
            try:
                cmd = (
                    self._commands.get(timeout=0.2)
                    if self._paused and block
                    else self._commands.get_nowait()
                )
            except queue.Empty:
                if self._paused and block and self._stop is None:
                    continue
                return
            try:
                cmd.future.set_result(self._apply(cmd))
            except Exception as exc:  # a failed command is reported to its caller, not fatal
                cmd.future.set_exception(exc)
            if self._stop is not None:
                return

    def _apply(self, cmd: _Command) -> Any:
        if cmd.kind == "pause":
            if not self._paused:
                self._flush_metrics()
                self._paused = True
                self._set_state("paused", "paused by user")
            return self.state.step
        if cmd.kind == "resume":
            if self._paused:
                self._paused = False
                self._window_start = time.perf_counter()
                self._window_tokens = self._window_samples = 0
                self._set_state("running", "resumed by user")
            return self.state.step
        if cmd.kind == "stop":
            self._stop = ("stopped", cmd.arg)
            self._paused = False
            return self.state.step
        if cmd.kind == "save":
            self._flush_metrics()
            return self._checkpoint(("manual",), val_loss=None)
        if cmd.kind == "weights":
            state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
            return self.state.step, state
        if cmd.kind == "set_lr":
            old = self.schedule.lr_at(self.state.step)
            self.schedule.rescale_to(cmd.arg, self.state.step)
            self._apply_lr()
            self._message("info", f"learning rate set to {cmd.arg:.3g} (was {old:.3g})", lr=cmd.arg)
            return cmd.arg
        raise ValueError(f"unknown command {cmd.kind!r}")

    def _serve_commands_ddp(self) -> None:
        """The step boundary of a DDP run: rank 0's commands reach every rank here."""
        group = self.group
        assert group is not None
        if self.lead:
            self._serve_queue(block=False)
            # The other ranks check the same limits, but rank 0's view is the one that counts
            # (a limit changed on rank 0 alone must not leave them waiting in a collective).
            self._stop = self._stop or self._limit_reached()
        stop, pause, base_lr = group.share_commands(
            stop=self._stop is not None, pause=self._paused, base_lr=self.schedule.base_lr
        )
        if pause:
            if self.lead:
                self._serve_queue()  # returns on resume or stop
                group.end_pause(stop=self._stop is not None, base_lr=self.schedule.base_lr)
                return
            stop, base_lr = group.wait_pause_end()
        if not self.lead:
            if stop and self._stop is None:
                self._stop = ("stopped", "stopped by rank 0")
            if base_lr != self.schedule.base_lr:
                self.schedule.base_lr = base_lr
                self._apply_lr()

    # ---------------------------------------------------------------------------------------
    # The loop

    def train(self) -> TrainResult:
        """Train until the schedule ends, a limit is reached, a stop is asked for, or a failure."""
        self._set_state("running")
        self._apply_lr()
        try:
            while True:
                self._serve_commands()
                self._check_limits()
                self.train_step()
                if self.lead:
                    self._after_step_or_defer()
        except _Stop as stop:
            if self.group is not None:
                self.group.ended_together = True  # every rank raised this _Stop at this step
            result = self._end(stop.status, stop.reason)
        except Exception as exc:
            self._flush_metrics(raise_errors=False)
            cause = self._worker_failure()
            reason = cause or f"{type(exc).__name__}: {exc}".splitlines()[0]
            self._message("error", reason)
            self._set_state("failed", reason)
            if cause:  # the worker's reason, not rank 0's "connection closed by peer"
                raise RuntimeError(cause) from exc
            raise
        return result

    def _worker_failure(self) -> str:
        """In a DDP run, why another rank failed (as it reported it), or ""."""
        if self.group is None or not self.lead:
            return ""
        errors = self.group.worker_errors()
        return f"DDP {errors[0]}" if errors else ""

    def _after_step_or_defer(self) -> None:
        """In a DDP run an ending that rank 0 alone decides (early stopping, after its
        validation) waits for the next step boundary, which tells the other ranks."""
        try:
            self._after_step()
        except _Stop as stop:
            if self.group is None:
                raise
            self._stop = (stop.status, stop.reason)

    def _check_limits(self) -> None:
        ending = self._stop or self._limit_reached()
        if ending is not None:
            raise _Stop(*ending)

    def _limit_reached(self) -> tuple[Outcome, str] | None:
        if self.state.step >= self.total_steps:
            return "finished", f"schedule complete ({self.total_steps} steps)"
        if self.max_steps is not None and self.state.step >= self.max_steps:
            return "stopped", f"--max-steps {self.max_steps} reached"
        if self.max_epochs is not None and self.state.epoch >= self.max_epochs:
            return "stopped", f"--max-epochs {self.max_epochs} reached"
        return None

    def train_step(self) -> None:
        """One optimizer step over ``grad_accum`` micro-batches."""
        if self.group is not None:
            self._train_step_ddp()
            return
        model, cfg = self.model, self.cfg
        if not model.training:  # after validation; train() walks every submodule (~1 ms)
            model.train()
        totals: torch.Tensor | None = None
        tokens = torch.zeros((), device=self.device)
        samples = 0
        for _ in range(cfg.grad_accum):
            batch = self._next_batch()
            self._count_flops_once(batch)
            samples += _batch_size(batch)
            tokens += _batch_tokens(batch)
            with self._autocast():
                losses, _ = split_output(self.net(batch))
                loss = self._weighted(losses)
            self.scaler.scale(loss / cfg.grad_accum).backward()
            # (heads..., total) detached, averaged over micro-batches
            row = torch.stack(
                [*(losses[h].detach().float() for h in self.head_names), loss.detach().float()]
            )
            totals = row / cfg.grad_accum if totals is None else totals + row / cfg.grad_accum
        assert totals is not None
        self._finish_step(totals, tokens, samples)

    def _train_step_ddp(self) -> None:
        """``train_step`` on one rank of several: this rank's slice of each global micro-batch,
        its loss weighted so that DDP's gradient average is the global batch's gradient (see
        podium.engine.distributed), and losses summed over ranks so every rank reports the global ones.
        """
        group, net, cfg = self.group, self.net, self.cfg
        assert group is not None
        if not self.lead:
            group.reseed(cfg.seed, self.state.step)
        if not (net.training and self.model.training):  # validation sets the inner model's
            net.train()
        accum = cfg.grad_accum
        batches = [self._next_batch() for _ in range(accum)]
        if self.lead:
            self._count_flops_once(batches[0])
        # (accum, 2): valid tokens and examples of this rank's slices, then of the global batches
        local = torch.stack(
            [
                torch.stack(
                    [
                        _batch_tokens(b).to(self.device, torch.float64),
                        torch.tensor(
                            float(_batch_size(b)), device=self.device, dtype=torch.float64
                        ),
                    ]
                )
                for b in batches
            ]
        )
        counts = group.all_sum(local.clone())
        scale = (group.world * local[:, 0] / counts[:, 0].clamp_min(1.0)).float()  # (accum,)
        totals = torch.zeros(len(self.head_names) + 1, device=self.device)
        for k, batch in enumerate(batches):
            with group.no_sync(net, last=k == accum - 1):
                with self._autocast():
                    losses, _ = split_output(net(batch))
                    loss = self._weighted(losses)
                self.scaler.scale(loss * scale[k] / accum).backward()
            row = torch.stack(
                [*(losses[h].detach().float() for h in self.head_names), loss.detach().float()]
            )
            totals += row * (scale[k] / (group.world * accum))
        # Also the non-finite check's input: a NaN on any rank makes the sum NaN on every rank,
        # so all ranks skip the same updates.
        group.all_sum(totals)
        tokens = counts[:, 0].sum().float()
        samples = int(counts[:, 1].sum())
        self._finish_step(totals, tokens, samples)

    def _finish_step(self, totals: torch.Tensor, tokens: torch.Tensor, samples: int) -> None:
        """Clip, step (unless non-finite), count and record; after the backward passes."""
        cfg = self.cfg
        self.scaler.unscale_(self.optimizer)
        max_norm = cfg.clip_grad_norm if cfg.clip_grad_norm > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        finite_t = torch.isfinite(grad_norm) & torch.isfinite(totals[-1])
        if self.skip_on_device:
            # No sync: the fused kernel skips the whole update (its step count too) when
            # found_inf is nonzero; the loop learns of it when it next reads the losses.
            self.optimizer.found_inf = (~finite_t).float()  # type: ignore[attr-defined]
            try:
                self.optimizer.step()
            finally:
                del self.optimizer.found_inf  # type: ignore[attr-defined]
            made: bool | None = None  # counted at the next read, from the row's flag
        else:
            # CPU: refuse a non-finite update before it reaches the weights (a cheap read).
            # GradScaler makes (or skips) the fp16 update itself: for the loop it is made.
            made = bool(finite_t) or self.scaler.is_enabled()
            if made:
                self.scaler.step(self.optimizer)
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

        self.state.step += 1
        self.state.batch_in_epoch += 1
        self.state.samples_seen += samples
        self._window_samples += samples
        if self.lead:  # the other ranks publish nothing; rank 0 records the (global) numbers
            self._pending.append(
                (
                    self.state.step,
                    self._epoch_float(),
                    torch.cat(
                        [
                            totals,
                            grad_norm.detach().float().view(1),
                            finite_t.float().view(1),
                            tokens.view(1),
                        ]
                    ),
                )
            )
        if made is not None:
            self._count_nonfinite([made], first_step=self.state.step)
        self._end_epoch_if_done()

    def _count_nonfinite(self, flags: list[bool], *, first_step: int) -> None:
        """Count consecutive skipped updates from their flags (True = the update was made),
        oldest first, the first at ``first_step``; fail the run at ``max_nonfinite_steps``."""
        for i, ok in enumerate(flags):
            if ok:
                self.state.nonfinite_in_a_row = 0
                continue
            self.state.nonfinite_in_a_row += 1
            self._message(
                "warning", f"step {first_step + i}: non-finite loss or gradient; update skipped"
            )
            if self.state.nonfinite_in_a_row >= self.cfg.max_nonfinite_steps:
                if self.lead:
                    self._flush_metrics()  # a no-op when called from inside the flush
                raise _Stop(
                    "failed",
                    f"non-finite loss or gradient in {self.state.nonfinite_in_a_row} consecutive steps "
                    '(lower train.lr, check the data, or try train.precision = "fp32")',
                )

    def _end_epoch_if_done(self) -> None:
        if self.state.batch_in_epoch >= self.steps_per_epoch:
            self.state.epoch += 1
            self.state.batch_in_epoch = 0
            self._epoch_iter = None
        self._apply_lr()

    def _after_step(self) -> None:
        step = self.state.step
        epoch_done = self.state.batch_in_epoch == 0
        if step % self.log_every == 0 or epoch_done:
            self._flush_metrics()
        validate = (self.cfg.val_every_steps and step % self.cfg.val_every_steps == 0) or (
            not self.cfg.val_every_steps and epoch_done
        )
        ck = self.checkpointer
        # Every Nth epoch end, whether or not a validation falls on it (with val_every_steps
        # the two rarely meet: every_epochs = 5 once gave its first epoch checkpoint at 25).
        epoch_due = (
            epoch_done
            and ck is not None
            and ck.cfg.every_epochs > 0
            and self.state.epoch % ck.cfg.every_epochs == 0
        )
        kinds: tuple[Any, ...] = ()
        val_loss: float | None = None
        if validate and self.val_set is not None and len(self.val_set) > 0:
            self._flush_metrics()
            val_loss, improved = self.validate()
            kinds = ("latest", "best") if improved else ("latest",)
        elif self.save_every_steps and step % self.save_every_steps == 0:
            kinds = ("latest",)
        if epoch_due:
            kinds += ("epoch",)
        if ck is not None and ck.cfg.keep_every_steps and step % ck.cfg.keep_every_steps == 0:
            kinds += ("periodic",)
        if kinds:
            self._flush_metrics()
            self._checkpoint_or_pause(kinds, val_loss=val_loss)
        if val_loss is not None:
            es = self.cfg.early_stopping
            if es.patience and self.state.evals_without_improvement >= es.patience:
                raise _Stop(
                    "finished",
                    f"early stopping: no improvement over {self.state.best_val:.4f} "
                    f"in {es.patience} validations",
                )
        if epoch_done and self.on_epoch_end is not None and getattr(self, "lead", True):
            values = self.on_epoch_end()
            if values:
                self.bus.publish(
                    Scalars(
                        step=step, epoch=float(self.state.epoch), wall=time.time(), values=values
                    )
                )

    # ---------------------------------------------------------------------------------------
    # Pieces

    def _count_flops_once(self, batch: Mapping[str, Any]) -> None:
        """The model's training FLOPs per token, from this process's first batch, when the
        device's peak is known (MFU needs both). Counting runs one extra forward without
        gradients, dropout or RNG draws (``podium.engine.mfu``). Kernels outside torch's
        operators (a Triton attention kernel) are not counted, so MFU errs low with them."""
        if self.flops_per_token is not None or self.peak_flops is None:
            return
        count = count_flops(self.model, batch, float(_batch_tokens(batch)))
        self.flops_per_token = count.train_per_token
        self._message(
            "info",
            f"model FLOPs: {count.train_per_token / 1e6:,.1f} MFLOP per token (forward + backward)",
        )

    def _weighted(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        total = None
        for head, value in losses.items():
            w = self.weights.get(head, 1.0)
            if w == 0.0:
                continue
            term = value * w
            total = term if total is None else total + term
        if total is None:
            raise ValueError("every head has loss weight 0")
        return total

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _epoch_float(self) -> float:
        return self.state.epoch + self.state.batch_in_epoch / self.steps_per_epoch

    def _apply_lr(self) -> None:
        lr = self.schedule.lr_at(self.state.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def _epoch_batches(self, epoch: int, start_step: int) -> list[list[int]]:
        """The micro-batches of ``epoch`` from optimizer step ``start_step`` on: a pure function
        of (seed, epoch), so a resumed run sees exactly the batches it would have seen."""
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.train_set), generator=g).tolist()
        bs, accum = self.cfg.batch_size, self.cfg.grad_accum
        n_micro = self.steps_per_epoch * accum
        micro = [order[i * bs : (i + 1) * bs] for i in range(n_micro)]
        if self.group is not None:  # bs is the global batch; this rank trains on its slice
            micro = [self.group.shard(m) for m in micro]
        return micro[start_step * accum :]

    def _next_batch(self) -> dict[str, torch.Tensor]:
        if self._epoch_iter is None:
            set_epoch = getattr(self.train_set, "set_epoch", None)
            if set_epoch is not None:  # per-epoch augmentation, a function of (seed, epoch)
                set_epoch(self.state.epoch, self.cfg.seed)
            batches = self._epoch_batches(self.state.epoch, self.state.batch_in_epoch)
            workers = loader_workers(self.cfg.num_workers, self.device.type)
            loader = DataLoader(
                self.train_set,
                batch_sampler=batches,
                num_workers=workers,
                prefetch_factor=self.cfg.prefetch_batches if workers else None,
                collate_fn=default_collate,
                pin_memory=self.device.type == "cuda",
                # A private generator: DataLoader otherwise draws its base seed from the global
                # RNG, which would shift dropout masks after a mid-epoch resume.
                generator=torch.Generator().manual_seed(self.cfg.seed + self.state.epoch),
            )
            self._epoch_iter = iter(loader)
        batch = next(self._epoch_iter)
        return {
            k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v
            for k, v in batch.items()
        }

    @torch.no_grad()
    def validate(self) -> tuple[float, bool]:
        """Mean validation loss per head (token-weighted) and the family's metrics; updates best
        and early-stopping state."""
        assert self.val_set is not None
        model = self.model
        model.eval()
        sums: dict[str, torch.Tensor] = {}
        weight_total = torch.zeros((), device=self.device)
        bs = self.cfg.batch_size
        n_batches = math.ceil(len(self.val_set) / bs)
        if self.cfg.val_max_batches:
            n_batches = min(n_batches, self.cfg.val_max_batches)
        loader = DataLoader(
            self.val_set,
            batch_sampler=[
                list(range(i * bs, min((i + 1) * bs, len(self.val_set)))) for i in range(n_batches)
            ],
            collate_fn=default_collate,
            generator=torch.Generator(),
        )
        accumulator = self.metrics() if self.metrics is not None else None
        for batch in loader:
            batch = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            with self._autocast():
                losses, outputs = split_output(model(batch))
                total = self._weighted(losses)
            if accumulator is not None:
                accumulator.update({k: v.detach() for k, v in outputs.items()}, batch)
            w = _batch_tokens(batch).float()
            for head, value in [*losses.items(), ("__total__", total)]:
                sums[head] = sums.get(head, 0) + value.float() * w
            weight_total += w
        denom = weight_total.clamp_min(1.0)
        values = {h: float(v / denom) for h, v in sums.items()}
        val_loss = values.pop("__total__")
        measured = accumulator.compute() if accumulator is not None else MetricValues()
        es = self.cfg.early_stopping
        improved = math.isfinite(val_loss) and val_loss < self.state.best_val - es.min_delta
        if improved:
            self.state.best_val = val_loss
            self.state.evals_without_improvement = 0
        else:
            self.state.evals_without_improvement += 1
        self._improved_metrics = {}
        for metric, direction in self.best_metrics.items():
            value = measured.scalars.get(metric)
            if value is None or not math.isfinite(value):
                continue
            best = self.state.best_metrics.get(metric)
            if best is None or (value > best if direction == "max" else value < best):
                self.state.best_metrics[metric] = value
                self._improved_metrics[metric] = value
        patience_left = es.patience - self.state.evals_without_improvement if es.patience else None
        self.bus.publish(
            EvalMetrics(
                step=self.state.step,
                epoch=self._epoch_float(),
                wall=time.time(),
                loss=val_loss,
                losses=values,
                best=self.state.best_val,
                patience_left=patience_left,
                metrics=dict(measured.scalars),
                matrices=dict(measured.matrices),
            )
        )
        model.train()
        return val_loss, improved

    def _flush_metrics(self, *, raise_errors: bool = True) -> None:
        """Read the pending per-step values back in one sync and publish a StepMetrics per step."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        values = torch.stack([row for _, _, row in pending]).tolist()  # the one host sync
        now = time.perf_counter()
        elapsed = max(now - self._window_start, 1e-9)
        tokens = sum(v[-1] for v in values)
        self._window_tokens += tokens
        self.state.tokens_seen += int(tokens)
        tokens_per_s = self._window_tokens / elapsed
        step_mfu = (
            mfu(self.flops_per_token, tokens_per_s, self.peak_flops * self.world)
            if self.flops_per_token is not None and self.peak_flops is not None
            else None
        )
        samples_per_s = self._window_samples / elapsed
        per_step = elapsed / max(len(pending), 1)
        self._step_time_ema = (
            per_step if self._step_time_ema is None else 0.7 * self._step_time_ema + 0.3 * per_step
        )
        self._window_start, self._window_tokens, self._window_samples = now, 0, 0
        end = self.total_steps if self.max_steps is None else min(self.total_steps, self.max_steps)
        heads = self.head_names
        wall = time.time()
        for (step, epoch, _), row in zip(pending, values, strict=True):
            losses = dict(zip(heads, row[: len(heads)], strict=True))
            self.bus.publish(
                StepMetrics(
                    step=step,
                    epoch=epoch,
                    wall=wall,
                    loss=row[len(heads)],
                    losses=losses,
                    lr=self.schedule.lr_at(step - 1),
                    grad_norm=row[len(heads) + 1],
                    tokens_per_s=tokens_per_s,
                    samples_per_s=samples_per_s,
                    eta_s=max(end - self.state.step, 0) * (self._step_time_ema or 0.0),
                    mfu=step_mfu,
                )
            )
        if self.skip_on_device and raise_errors:
            flags = [row[len(heads) + 2] > 0.5 for row in values]
            self._count_nonfinite(flags, first_step=pending[0][0])

    # ---------------------------------------------------------------------------------------
    # State, checkpoints, ending

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "train_state": asdict(self.state),
            "rng": capture_rng(),
            **self.extra_state,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore everything a checkpoint holds; RNG last, after anything that might draw."""
        self.model.load_state_dict(strip_wrapper_prefixes(state["model"]))
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.state = TrainState(**state["train_state"])
        self._epoch_iter = None
        self._apply_lr()
        if self.lead:  # other ranks' streams are a function of the step (RankGroup.reseed)
            restore_rng(state["rng"])

    def _checkpoint(
        self, kinds: tuple[Any, ...], *, val_loss: float | None
    ) -> list[CheckpointInfo]:
        if self.checkpointer is None:
            return []
        if self.before_checkpoint is not None:
            self.before_checkpoint()
        written, removed = self.checkpointer.save(
            self.state_dict(),
            step=self.state.step,
            epoch=self._epoch_float(),
            val_loss=val_loss,
            kinds=kinds,
            best_metrics=self._improved_metrics,
        )
        self._improved_metrics = {}  # written once, by the save after the validation
        for info in written:
            self.bus.publish(
                CheckpointSaved(
                    step=info.step,
                    epoch=info.epoch,
                    wall=info.wall,
                    name=info.name,
                    path=str(self.checkpointer.directory / f"{info.name}.pt"),
                    kind=info.kind,
                    size=info.size,
                    val_loss=info.val_loss,
                )
            )
        for name in removed:
            self.bus.publish(CheckpointDeleted(step=self.state.step, wall=time.time(), name=name))
        return written

    def _checkpoint_or_pause(self, kinds: tuple[Any, ...], *, val_loss: float | None) -> None:
        """A scheduled save. When the disk refuses it (full, quota, read-only) the previous
        checkpoint is intact; pause so the user can free space and resume, rather than train on
        with nothing to fall back to."""
        try:
            self._checkpoint(kinds, val_loss=val_loss)
        except NonFiniteWeights as exc:  # the run fails on its own if the losses follow
            self._message("warning", str(exc))
        except OSError as exc:
            reason = f"checkpoint at step {self.state.step} not saved: {exc.strerror or exc}"
            self._message(
                "error", f"{reason}; run paused (free space, then resume)", errno=exc.errno
            )
            self._paused = True
            self._set_state("paused", reason)

    def _end(self, status: Outcome, reason: str) -> TrainResult:
        self._flush_metrics()
        # Always leave a resumable checkpoint at the step the run ended on.
        if (
            status != "failed"
            and self.checkpointer is not None
            and not self._has_checkpoint_at(self.state.step)
        ):
            try:
                self._checkpoint(("latest",), val_loss=None)
            except NonFiniteWeights as exc:
                reason = f"{reason}; {exc}"
                self._message("warning", str(exc))
            except OSError as exc:
                newest = max(
                    (i.step for i in list_checkpoints(self.checkpointer.directory)), default=0
                )
                status = "failed"
                reason = (
                    f"{reason}; the final checkpoint could not be written ({exc.strerror or exc}); "
                    f"resume continues from step {newest}"
                )
                self._message("error", reason)
        self._set_state(status, reason)
        return TrainResult(status=status, reason=reason, step=self.state.step)

    def _has_checkpoint_at(self, step: int) -> bool:
        assert self.checkpointer is not None
        return any(
            i.step == step and i.name == "latest"
            for i in list_checkpoints(self.checkpointer.directory)
        )

    def _set_state(self, state: str, reason: str = "") -> None:
        self.run_state = state
        self.bus.publish(
            StateChanged(step=self.state.step, wall=time.time(), state=state, reason=reason)
        )  # type: ignore[arg-type]

    def _message(self, level: str, text: str, **data: Any) -> None:
        self.bus.publish(
            Message(step=self.state.step, wall=time.time(), level=level, text=text, data=data)
        )  # type: ignore[arg-type]


def _batch_tokens(batch: Mapping[str, Any]) -> torch.Tensor:
    if "mask" in batch:
        return batch["mask"].detach().sum().float()
    return torch.tensor(float(_batch_size(batch)))


def _batch_size(batch: Mapping[str, Any]) -> int:
    for value in batch.values():
        if torch.is_tensor(value):
            return int(value.shape[0])
    return 0


def _optimizer_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay weight matrices and embeddings only; a model may define its own grouping."""
    if hasattr(model, "configure_optimizer_groups"):
        return model.configure_optimizer_groups(weight_decay)
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
