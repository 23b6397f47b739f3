"""Training: augmented arrays in memory, masked loss, AdamW with a cosine schedule, weight EMA,
early stopping on validation NME, a checkpoint every epoch, exact resume after a kill.

Determinism: the batch order of epoch ``e`` comes from a generator seeded by ``(seed, e)``, and
the checkpoint holds every other piece of state (weights, EMA, optimiser, schedule, global RNG,
history), so a run killed after any epoch and resumed ends with the same weights as one that was
never interrupted (same device, thread count and precision).

``train`` reads as its steps: prepare (data, device, networks), resume from a checkpoint, then per
epoch train, validate, log, keep the best, checkpoint and maybe stop early; then write the model.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from facekeys.errors import FacekeysError
from facekeys.model.arrays import batch_loss, evaluate_arrays, prepare_batch
from facekeys.model.checkpoints import read_checkpoint, write_checkpoint, write_model_folder
from facekeys.model.devices import autocast, matmul_gflops, model_flops, precision_name
from facekeys.model.settings import TrainSettings
from facekeys.model.setup import TrainingSetup, model_card, prepare_training
from facekeys.model.training_log import EpochLogger


@dataclass
class _Progress:
    """What changes as the epochs run; a checkpoint holds what a resume needs of it."""

    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"nme": float("inf"), "epoch": -1})
    best_state: dict[str, torch.Tensor] | None = None  # the best epoch's EMA weights
    start_epoch: int = 0
    run_id: str | None = None
    seconds_before: float = 0.0  # training seconds of the runs this one resumes
    images_per_s: float = 0.0  # of the last epoch run
    stopped_early: bool = False


def train(
    data_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    checkpoint_path: str | os.PathLike[str],
    settings: TrainSettings,
    logger: EpochLogger | None = None,
    log: Callable[[str], None] | None = None,
    keep_finished_checkpoint: bool = False,
) -> dict[str, Any]:
    """Trains on ``data_dir/{train,val}.npz`` and writes ``model.pt`` and ``model.json``.

    Resumes from ``checkpoint_path`` when it exists and was written for the same config;
    deletes it after a successful run, or, with ``keep_finished_checkpoint``, marks it finished
    so that a rerun (after a later step failed) writes the same model without training again.

    Returns:
        The training summary (also the basis of ``metrics/<dataset>/train.json``).
    """
    log = log or (lambda line: print(line, file=sys.stderr))
    logger = logger or EpochLogger()
    data_dir, out_dir, checkpoint_path = Path(data_dir), Path(out_dir), Path(checkpoint_path)
    setup = prepare_training(data_dir, settings)
    state = read_checkpoint(checkpoint_path, setup.device, log)
    if _is_finished(state, setup.digest):
        # A later step of the same stage failed after this training had finished.
        log(f"{checkpoint_path}: finished for this config; writing its model again")
        return _write_finished_model_again(state, out_dir, logger)
    progress = _resume(state, setup, checkpoint_path, log)
    progress.run_id = logger.start(progress.run_id)
    flops = model_flops(setup.model, setup.meta["channels"], setup.meta["image_size"])
    gflops = matmul_gflops(setup.device, setup.dtype)
    started = time.perf_counter()
    _run_epochs(setup, progress, started, checkpoint_path, logger, log)
    if progress.best_state is None:
        raise FacekeysError("training ran no epoch")
    card = model_card(setup)
    write_model_folder(out_dir, progress.best_state, card)
    summary = _summary(setup, progress, started, flops, gflops)
    if keep_finished_checkpoint:
        write_checkpoint(checkpoint_path, _finished_state(setup, progress, card, summary))
    else:
        checkpoint_path.unlink(missing_ok=True)
    return summary


def _is_finished(state: Any, digest: str) -> bool:
    """Whether a checkpoint marks a finished training of this config."""
    return state is not None and state.get("config_hash") == digest and bool(state.get("finished"))


def _write_finished_model_again(
    state: dict[str, Any], out_dir: Path, logger: EpochLogger
) -> dict[str, Any]:
    """Writes a finished checkpoint's model and returns its summary, in the same run."""
    write_model_folder(out_dir, state["best_state"], state["model_card"])
    summary = dict(state["summary"])
    summary["run_id"] = logger.start(summary.get("run_id") or None)
    return summary


def _resume(
    state: Any, setup: TrainingSetup, checkpoint_path: Path, log: Callable[[str], None]
) -> _Progress:
    """Restores a checkpoint written for this config (weights, EMA, optimiser, schedule, global
    RNG, history) and returns where it left off; anything else starts afresh."""
    if state is None:
        return _Progress()
    if state.get("config_hash") != setup.digest:
        log(f"{checkpoint_path}: written for another config; starting afresh")
        return _Progress()
    setup.model.load_state_dict(state["model"])
    setup.ema.load_state_dict(state["ema"])
    setup.optimizer.load_state_dict(state["optimizer"])
    setup.scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    log(f"resuming from {checkpoint_path} after epoch {state['epoch'] + 1}")
    return _Progress(
        history=state["history"],
        best=state["best"],
        best_state=state["best_state"],
        start_epoch=state["epoch"] + 1,
        run_id=state.get("run_id") or None,
        seconds_before=state.get("seconds", 0.0),
    )


def _run_epochs(
    setup: TrainingSetup,
    progress: _Progress,
    started: float,
    checkpoint_path: Path,
    logger: EpochLogger,
    log: Callable[[str], None],
) -> None:
    """The epochs left: train, validate, log, keep the best, checkpoint, maybe stop early."""
    settings = setup.settings
    for epoch in range(progress.start_epoch, settings.epochs):
        loss_sum, seconds = _train_one_epoch(setup, epoch)
        progress.images_per_s = setup.steps_per_epoch * settings.batch_size / seconds
        val = evaluate_arrays(
            setup.ema, setup.val_data, settings, setup.device, setup.fmt.eye_pair, setup.dtype
        )
        _log_epoch(setup, progress, epoch, loss_sum / setup.steps_per_epoch, seconds, val, logger)
        log(_epoch_line(settings, progress.history[-1]))
        if val["nme"] < progress.best["nme"]:
            progress.best = {"nme": val["nme"], "epoch": epoch + 1}
            progress.best_state = {k: v.detach().clone() for k, v in setup.ema.state_dict().items()}
        patience_left = settings.early_stopping_patience - (epoch + 1 - progress.best["epoch"])
        elapsed = progress.seconds_before + time.perf_counter() - started
        write_checkpoint(checkpoint_path, _epoch_state(setup, progress, epoch, elapsed))
        if patience_left <= 0:
            log(f"early stop: no better val_nme for {settings.early_stopping_patience} epochs")
            progress.stopped_early = True
            break


def _train_one_epoch(setup: TrainingSetup, epoch: int) -> tuple[float, float]:
    """One pass over the training arrays in epoch ``epoch``'s own order, with a progress bar.

    Returns:
        The sum of the batch losses, and the seconds the pass took.
    """
    settings, batch_size = setup.settings, setup.settings.batch_size
    setup.model.train()
    order = torch.randperm(
        len(setup.train_data),
        generator=torch.Generator().manual_seed(settings.seed * 1000 + epoch),
    )
    bar = tqdm(
        range(setup.steps_per_epoch),
        desc=f"epoch {epoch + 1}/{settings.epochs}",
        unit="batch",
        disable=None,
        file=sys.stderr,
        leave=False,
    )
    epoch_start, loss_sum = time.perf_counter(), 0.0
    for step in bar:
        loss_sum += _train_step(setup, order[step * batch_size : (step + 1) * batch_size])
        if step % 10 == 0:
            rate = (step + 1) * batch_size / (time.perf_counter() - epoch_start)
            bar.set_postfix(loss=f"{loss_sum / (step + 1):.4f}", img_s=f"{rate:.0f}")
    return loss_sum, time.perf_counter() - epoch_start


def _train_step(setup: TrainingSetup, idx: torch.Tensor) -> float:
    """One optimiser, schedule and EMA step on the samples ``idx``; returns the batch loss."""
    settings, data, device = setup.settings, setup.train_data, setup.device
    x = prepare_batch(data.images[idx], device, settings.channels_last)
    target = data.points[idx].to(device)
    mask = data.mask[idx].to(device)
    with autocast(device, setup.dtype):
        pred = setup.model(x)
    loss = batch_loss(pred, target, mask, settings)
    setup.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    setup.optimizer.step()
    setup.scheduler.step()
    # Warm-up: early on the average must not be dominated by the random init.
    step_no = setup.scheduler.last_epoch
    _ema_update(setup.ema, setup.model, min(settings.ema_decay, (1 + step_no) / (10 + step_no)))
    return float(loss.detach())


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """``ema`` moves towards ``model`` by ``1 - decay``; integer buffers are copied."""
    if decay <= 0:
        ema.load_state_dict(model.state_dict())
        return
    for e, m in zip(ema.state_dict().values(), model.state_dict().values(), strict=True):
        if e.dtype.is_floating_point:
            e.mul_(decay).add_(m.detach(), alpha=1 - decay)
        else:
            e.copy_(m)


def _log_epoch(
    setup: TrainingSetup,
    progress: _Progress,
    epoch: int,
    train_loss: float,
    seconds: float,
    val: dict[str, float],
    logger: EpochLogger,
) -> None:
    """Appends the epoch's row to the history and hands it to ``logger``."""
    row = {
        "epoch": epoch + 1,
        "train_loss": train_loss,
        "val_loss": val["loss"],
        "val_nme": val["nme"],
        "lr": setup.optimizer.param_groups[0]["lr"],
        "images_per_s": progress.images_per_s,
        "seconds": seconds,
    }
    progress.history.append(row)
    logger.epoch(epoch + 1, row)


def _epoch_line(settings: TrainSettings, row: dict[str, float]) -> str:
    """The log line of one epoch's row."""
    return (
        f"epoch {row['epoch']}/{settings.epochs}: train_loss {row['train_loss']:.5f} "
        f"val_loss {row['val_loss']:.5f} val_nme {100 * row['val_nme']:.2f}% "
        f"({row['images_per_s']:.0f} img/s)"
    )


def _epoch_state(
    setup: TrainingSetup, progress: _Progress, epoch: int, seconds: float
) -> dict[str, Any]:
    """The checkpoint after epoch ``epoch``: everything a resume needs to go on exactly."""
    return {
        "config_hash": setup.digest,
        "epoch": epoch,
        "model": setup.model.state_dict(),
        "ema": setup.ema.state_dict(),
        "optimizer": setup.optimizer.state_dict(),
        "scheduler": setup.scheduler.state_dict(),
        "rng": torch.get_rng_state(),
        "history": progress.history,
        "best": progress.best,
        "best_state": progress.best_state,
        "run_id": progress.run_id or "",
        "seconds": seconds,
    }


def _finished_state(
    setup: TrainingSetup, progress: _Progress, card: dict[str, Any], summary: dict[str, Any]
) -> dict[str, Any]:
    """The checkpoint of a finished training: enough to write the same model again."""
    return {
        "config_hash": setup.digest,
        "finished": True,
        "best_state": progress.best_state,
        "model_card": card,
        "summary": summary,
    }


def _summary(
    setup: TrainingSetup, progress: _Progress, started: float, flops: float, gflops: float
) -> dict[str, Any]:
    """The training summary: best epoch, speed against the machine's matmul peak, history."""
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    images_per_s, history = progress.images_per_s, progress.history
    return {
        "best_epoch": progress.best["epoch"],
        "best_val_nme": progress.best["nme"],
        "epochs_run": len(history),
        "stopped_early": progress.stopped_early,
        "final_train_loss": history[-1]["train_loss"],
        "train_seconds": progress.seconds_before + time.perf_counter() - started,
        "images_per_s": images_per_s,
        "model_gflop_per_image_forward": flops / 1e9,
        "training_gflop_per_s_estimate": 3 * flops * images_per_s / 1e9,
        "machine_matmul_gflop_per_s": gflops,
        "utilisation_of_matmul_peak": 3 * flops * images_per_s / 1e9 / gflops,
        "precision": precision_name(setup.dtype),
        "device": setup.device.type,
        "threads": torch.get_num_threads(),
        "peak_rss_mb": peak_mb,
        "history": history,
        "run_id": progress.run_id,
    }
