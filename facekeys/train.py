"""Training: augmented arrays in memory, masked loss, AdamW with a cosine schedule, weight EMA,
early stopping on validation NME, a checkpoint every epoch, exact resume after a kill.

Determinism: the batch order of epoch ``e`` comes from a generator seeded by ``(seed, e)``, and
the checkpoint holds every other piece of state (weights, EMA, optimiser, schedule, global RNG,
history), so a run killed after any epoch and resumed ends with the same weights as one that was
never interrupted (same device, thread count and precision).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import pickle
import resource
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from facekeys.atomic import atomic_file, sha256_file, write_json
from facekeys.errors import FacekeysError
from facekeys.labelled_splits import load_npz
from facekeys.losses import LOSSES, masked_loss, nme_per_sample
from facekeys.models import ARCHITECTURES, build_model
from facekeys.schemes import FORMATS

# Inputs are scaled to [0, 1] then standardised with these (recorded with the model).
INPUT_MEAN = 0.5
INPUT_STD = 0.25


@dataclass(frozen=True)
class TrainSettings:
    """The ``train`` section of params.yaml."""

    architecture: str = "heatmap"
    width: int = 24
    heatmap_stride: int = 8  # heatmap cell size in input pixels: 8, or 4 for small inputs
    stem_block: bool = True  # a residual block at stride 2 (resnet, heatmap)
    loss: str = "wing"
    wing_w: float = 0.04
    wing_epsilon: float = 0.008
    smooth_l1_beta: float = 0.01
    epochs: int = 14
    batch_size: int = 64
    lr: float = 0.002
    weight_decay: float = 0.0001
    warmup_epochs: float = 0.5
    ema_decay: float = 0.998
    early_stopping_patience: int = 5
    seed: int = 2026
    precision: str = "auto"  # auto | fp32 | bf16 (CPU/CUDA) | fp16 (CUDA)
    channels_last: bool = True
    threads: int = 0  # CPU threads; 0 = one per core
    device: str = "auto"  # auto | cpu | cuda

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> TrainSettings:
        """Builds settings from the ``train`` section; unknown keys are an error."""
        known = set(cls.__dataclass_fields__)
        unknown = set(params) - known - {"mlflow", "refine"}
        if unknown:
            raise FacekeysError(f"params.yaml: train: unknown keys {sorted(unknown)}")
        settings = cls(**{k: v for k, v in params.items() if k in known})
        settings.check()
        return settings

    @classmethod
    def refine_from_params(cls, params: dict[str, Any]) -> TrainSettings:
        """Settings of the refinement model: the section's, with ``train.refine`` keys replaced."""
        overrides = params.get("refine") or {}
        if not isinstance(overrides, dict):
            raise FacekeysError("params.yaml: train.refine must be a mapping of train keys")
        unknown = set(overrides) - set(cls.__dataclass_fields__)
        if unknown:
            raise FacekeysError(f"params.yaml: train.refine: unknown keys {sorted(unknown)}")
        settings = replace(cls.from_params(params), **overrides)
        settings.check()
        return settings

    def check(self) -> None:
        problems = []
        if self.architecture not in ARCHITECTURES:
            problems.append(f"architecture must be one of {ARCHITECTURES}")
        if self.heatmap_stride not in (4, 8):
            problems.append("heatmap_stride must be 4 or 8")
        if not isinstance(self.stem_block, bool):  # a quoted "false" would be true
            problems.append("stem_block must be true or false")
        if self.loss not in LOSSES:
            problems.append(f"loss must be one of {LOSSES}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            problems.append("precision must be auto, fp32, bf16 or fp16")
        if self.epochs < 1 or self.batch_size < 1:
            problems.append("epochs and batch_size must be >= 1")
        if problems:
            raise FacekeysError("params.yaml: train: " + "; ".join(problems))


def resolve_device(settings: TrainSettings) -> torch.device:
    if settings.device == "cuda" or (settings.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise FacekeysError("train.device is cuda but no CUDA device is available")
        return torch.device("cuda")
    return torch.device("cpu")


def cpu_has_bf16() -> bool:
    """True where the CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere it is slower."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(settings: TrainSettings, device: torch.device) -> torch.dtype | None:
    """The mixed-precision dtype to use, or None for plain fp32."""
    if settings.precision == "fp32":
        return None
    if settings.precision == "fp16":
        if device.type != "cuda":
            raise FacekeysError("train.precision fp16 needs a CUDA device; use bf16 or auto")
        return torch.float16
    if settings.precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_bf16() else None


@dataclass
class Arrays:
    images: torch.Tensor  # uint8 (N, C, S, S)
    points: torch.Tensor  # float32 (N, P, 2), fractions of S
    mask: torch.Tensor  # bool (N, P)

    @classmethod
    def from_npz(cls, path: Path) -> Arrays:
        data = load_npz(path)
        images = torch.from_numpy(data["images"])
        images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
        size = images.shape[-1]
        return cls(
            images=images.contiguous(),
            points=torch.from_numpy(data["points"]).float() / size,
            mask=torch.from_numpy(data["mask"]),
        )

    def __len__(self) -> int:
        return self.images.shape[0]


def prepare_batch(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """uint8 images -> standardised float tensor on ``device``."""
    x = images.to(device, non_blocking=True).float().div_(255.0).sub_(INPUT_MEAN).div_(INPUT_STD)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def config_hash(config: dict[str, Any]) -> str:
    """A short hash of everything that determines the weights (resume only when it matches)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def evaluate_arrays(
    model: torch.nn.Module,
    data: Arrays,
    settings: TrainSettings,
    device: torch.device,
    eye_pair: tuple[int, int],
    dtype: torch.dtype | None,
    batch_size: int = 256,
) -> dict[str, float]:
    """Mean masked loss and NME of ``model`` over ``data``."""
    model.eval()
    losses, nmes, count = 0.0, [], 0
    for start in range(0, len(data), batch_size):
        sl = slice(start, start + batch_size)
        x = prepare_batch(data.images[sl], device, settings.channels_last)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            pred = model(x)
        target, mask = data.points[sl].to(device), data.mask[sl].to(device)
        losses += float(_loss(pred, target, mask, settings)) * len(x)
        nmes.append(nme_per_sample(pred.float(), target, mask, eye_pair).cpu())
        count += len(x)
    nme = torch.cat(nmes)
    return {"loss": losses / max(count, 1), "nme": float(torch.nanmean(nme))}


def _loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, s: TrainSettings):
    return masked_loss(pred, target, mask, s.loss, s.wing_w, s.wing_epsilon, s.smooth_l1_beta)


def model_flops(model: torch.nn.Module, channels: int, size: int) -> float:
    """Forward FLOPs per image (multiply-adds count 2), measured by torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    probe = copy.deepcopy(model).cpu().eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        probe(torch.zeros(1, channels, size, size))
    return float(counter.get_total_flops())


def matmul_gflops(device: torch.device, dtype: torch.dtype | None, n: int = 1024) -> float:
    """Measured dense matmul throughput of this machine in the training precision."""
    dt = dtype or torch.float32
    a = torch.randn(n, n, device=device, dtype=dt)
    b = torch.randn(n, n, device=device, dtype=dt)
    for _ in range(2):
        a @ b
    reps = 10
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


class EpochLogger:
    """Receives per-epoch results (MLflow in the stage; nothing in tests)."""

    def start(self, resumed_run_id: str | None) -> str | None:
        return None

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        pass


class PrefixedLogger(EpochLogger):
    """Logs a second training into a run already started by ``inner``, metric names prefixed."""

    def __init__(self, inner: EpochLogger, prefix: str, run_id: str | None) -> None:
        self.inner, self.prefix, self.run_id = inner, prefix, run_id

    def start(self, resumed_run_id: str | None) -> str | None:
        return self.run_id

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.inner.epoch(
            epoch, {(k if k == "epoch" else f"{self.prefix}{k}"): v for k, v in metrics.items()}
        )


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
    meta = json.loads((data_dir / "meta.json").read_text(encoding="utf-8"))
    fmt = FORMATS[meta["format"]]
    device = resolve_device(settings)
    if device.type == "cpu":
        torch.set_num_threads(settings.threads or os.cpu_count() or 1)
    dtype = autocast_dtype(settings, device)
    train_data = Arrays.from_npz(data_dir / "train.npz")
    val_data = Arrays.from_npz(data_dir / "val.npz")
    if len(train_data) < settings.batch_size:
        raise FacekeysError(
            f"{data_dir}/train.npz: {len(train_data)} samples < batch_size {settings.batch_size}"
        )
    size, channels = meta["image_size"], meta["channels"]

    config = {
        "train": asdict(settings) | {"threads": None, "device": None},
        "data": meta["settings"],
        "format": meta["format"],
        "train_samples": len(train_data),
        # Same settings on changed data must not resume or reuse a checkpoint.
        "data_sha256": {n: sha256_file(data_dir / n) for n in ("train.npz", "val.npz")},
    }
    digest = config_hash(config)

    torch.manual_seed(settings.seed)
    model = build_model(
        settings.architecture, fmt.num_points, channels, size, settings.width,
        settings.heatmap_stride, settings.stem_block,
    )  # fmt: skip
    model = model.to(device)
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
    )
    steps_per_epoch = len(train_data) // settings.batch_size
    total_steps = steps_per_epoch * settings.epochs
    warmup = max(1, int(settings.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _lr_factor(step, total_steps, warmup)
    )
    history: list[dict[str, float]] = []
    best = {"nme": float("inf"), "epoch": -1}
    best_state: dict[str, torch.Tensor] | None = None
    start_epoch, run_id, seconds_before = 0, None, 0.0

    state = _read_checkpoint(checkpoint_path, device, log)
    if state is not None:
        if state.get("config_hash") == digest and state.get("finished"):
            # A later step of the same stage failed after this training had finished.
            log(f"{checkpoint_path}: finished for this config; writing its model again")
            _write_model(out_dir, state["best_state"], state["model_card"])
            summary = dict(state["summary"])
            summary["run_id"] = logger.start(summary.get("run_id") or None)
            return summary
        if state.get("config_hash") == digest:
            model.load_state_dict(state["model"])
            ema.load_state_dict(state["ema"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"])
            history, best, best_state = state["history"], state["best"], state["best_state"]
            start_epoch, run_id = state["epoch"] + 1, state.get("run_id") or None
            seconds_before = state.get("seconds", 0.0)
            log(f"resuming from {checkpoint_path} after epoch {state['epoch'] + 1}")
        else:
            log(f"{checkpoint_path}: written for another config; starting afresh")
    run_id = logger.start(run_id)

    eye_pair = fmt.eye_pair
    flops = model_flops(model, channels, size)
    gflops = matmul_gflops(device, dtype)
    from tqdm import tqdm

    images_per_s = 0.0
    started = time.perf_counter()
    stopped_early = False
    for epoch in range(start_epoch, settings.epochs):
        model.train()
        order = torch.randperm(
            len(train_data), generator=torch.Generator().manual_seed(settings.seed * 1000 + epoch)
        )
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"epoch {epoch + 1}/{settings.epochs}",
            unit="batch",
            disable=None,
            file=sys.stderr,
            leave=False,
        )
        epoch_start, loss_sum = time.perf_counter(), 0.0
        for step in bar:
            idx = order[step * settings.batch_size : (step + 1) * settings.batch_size]
            x = prepare_batch(train_data.images[idx], device, settings.channels_last)
            target = train_data.points[idx].to(device)
            mask = train_data.mask[idx].to(device)
            with torch.autocast(
                device.type, dtype=dtype or torch.float32, enabled=dtype is not None
            ):
                pred = model(x)
            loss = _loss(pred, target, mask, settings)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            # Warm-up: early on the average must not be dominated by the random init.
            step_no = scheduler.last_epoch
            _ema_update(ema, model, min(settings.ema_decay, (1 + step_no) / (10 + step_no)))
            loss_sum += float(loss.detach())
            if step % 10 == 0:
                rate = (step + 1) * settings.batch_size / (time.perf_counter() - epoch_start)
                bar.set_postfix(loss=f"{loss_sum / (step + 1):.4f}", img_s=f"{rate:.0f}")
        train_seconds = time.perf_counter() - epoch_start
        images_per_s = steps_per_epoch * settings.batch_size / train_seconds
        val = evaluate_arrays(ema, val_data, settings, device, eye_pair, dtype)
        row = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / steps_per_epoch,
            "val_loss": val["loss"],
            "val_nme": val["nme"],
            "lr": optimizer.param_groups[0]["lr"],
            "images_per_s": images_per_s,
            "seconds": train_seconds,
        }
        history.append(row)
        logger.epoch(epoch + 1, row)
        log(
            f"epoch {epoch + 1}/{settings.epochs}: train_loss {row['train_loss']:.5f} "
            f"val_loss {val['loss']:.5f} val_nme {100 * val['nme']:.2f}% "
            f"({images_per_s:.0f} img/s)"
        )
        if val["nme"] < best["nme"]:
            best = {"nme": val["nme"], "epoch": epoch + 1}
            best_state = {k: v.detach().clone() for k, v in ema.state_dict().items()}
        patience_left = settings.early_stopping_patience - (epoch + 1 - best["epoch"])
        elapsed = seconds_before + time.perf_counter() - started
        with atomic_file(checkpoint_path, "wb") as handle:
            torch.save(
                {
                    "config_hash": digest,
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "ema": ema.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": torch.get_rng_state(),
                    "history": history,
                    "best": best,
                    "best_state": best_state,
                    "run_id": run_id or "",
                    "seconds": elapsed,
                },
                handle,
            )
        if patience_left <= 0:
            log(f"early stop: no better val_nme for {settings.early_stopping_patience} epochs")
            stopped_early = True
            break

    if best_state is None:
        raise FacekeysError("training ran no epoch")
    model_card = {
        "architecture": settings.architecture,
        "width": settings.width,
        "heatmap_stride": settings.heatmap_stride,
        "stem_block": settings.stem_block,
        "format": meta["format"],
        # Which data it learnt from (e.g. derived:youtube-faces-68 instead of Kaggle's own).
        "data_source": meta.get("data_source"),
        "input": {
            "size": size,
            "channels": channels,
            "color": meta["color"],
            "scale": 1 / 255,
            "mean": INPUT_MEAN,
            "std": INPUT_STD,
            "layout": "NCHW",
        },
        "output": "(N, P, 2) coordinates as fractions of the input side; pixel x = value * size",
        "crop_policy": meta["crop_policy"],
        "label_pixel_offset": meta.get("label_pixel_offset", 0.0),
        "keypoints": meta["keypoints"],
        "resolved_config": config,
        "config_hash": digest,
    }
    _write_model(out_dir, best_state, model_card)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    summary = {
        "best_epoch": best["epoch"],
        "best_val_nme": best["nme"],
        "epochs_run": len(history),
        "stopped_early": stopped_early,
        "final_train_loss": history[-1]["train_loss"],
        "train_seconds": seconds_before + time.perf_counter() - started,
        "images_per_s": images_per_s,
        "model_gflop_per_image_forward": flops / 1e9,
        "training_gflop_per_s_estimate": 3 * flops * images_per_s / 1e9,
        "machine_matmul_gflop_per_s": gflops,
        "utilisation_of_matmul_peak": 3 * flops * images_per_s / 1e9 / gflops,
        "precision": str(dtype).replace("torch.", "") if dtype else "float32",
        "device": device.type,
        "threads": torch.get_num_threads(),
        "peak_rss_mb": peak_mb,
        "history": history,
        "run_id": run_id,
    }
    if keep_finished_checkpoint:
        with atomic_file(checkpoint_path, "wb") as handle:
            torch.save(
                {
                    "config_hash": digest,
                    "finished": True,
                    "best_state": best_state,
                    "model_card": model_card,
                    "summary": summary,
                },
                handle,
            )
    else:
        checkpoint_path.unlink(missing_ok=True)
    return summary


def _write_model(
    out_dir: Path, best_state: dict[str, torch.Tensor], model_card: dict[str, Any]
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_file(out_dir / "model.pt", "wb") as handle:
        torch.save({k: v.cpu() for k, v in best_state.items()}, handle)
    write_json(out_dir / "model.json", model_card)


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    if decay <= 0:
        ema.load_state_dict(model.state_dict())
        return
    for e, m in zip(ema.state_dict().values(), model.state_dict().values(), strict=True):
        if e.dtype.is_floating_point:
            e.mul_(decay).add_(m.detach(), alpha=1 - decay)
        else:
            e.copy_(m)


def load_model(model_dir: str | os.PathLike[str]) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Loads ``model.pt`` (weights only, no pickles) and ``model.json`` from a model folder."""
    model_dir = Path(model_dir)
    return load_model_files(model_dir / "model.pt", model_dir / "model.json")


def load_model_files(
    weights: str | os.PathLike[str], card_path: str | os.PathLike[str]
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Builds the model described by a model card and loads its weights (``weights_only``)."""
    card = json.loads(Path(card_path).read_text(encoding="utf-8"))
    fmt = FORMATS[card["format"]]
    model = build_model(
        card["architecture"], fmt.num_points, card["input"]["channels"], card["input"]["size"],
        # Cards written before these two keys existed: stride 8 with a stem block.
        card["width"], card.get("heatmap_stride", 8), card.get("stem_block", True),
    )  # fmt: skip
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval(), card


def _read_checkpoint(path: Path, device: torch.device, log: Callable[[str], None]) -> Any:
    """A checkpoint's state, or None where there is none or it cannot be read (a kill while
    the disk was full, a file from elsewhere): then training starts afresh, saying why."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "weights only load failed" in reason.lower():
            reason = "it holds Python objects, not plain tensors"
        log(f"{path}: unreadable checkpoint ({reason[:120]}); starting afresh")
        return None
    return state if isinstance(state, dict) else None


def publish_model(staging: str | os.PathLike[str], model_dir: str | os.PathLike[str]) -> None:
    """Moves a model folder trained in ``staging`` into ``model_dir`` (which may hold other
    stages' outputs, e.g. ``export/``), replacing the networks there.

    ``model.pt`` moves last: a folder a kill interrupts mid-way has no first network and is
    refused on loading, never a new first network beside an old refinement network.
    """
    staging, model_dir = Path(staging), Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "model.pt").unlink(missing_ok=True)
    for name in ("refine", "loss_curves.png", "model.json", "model.pt"):
        source, target = staging / name, model_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        if source.exists():
            os.replace(source, target)
        else:
            target.unlink(missing_ok=True)
    shutil.rmtree(staging, ignore_errors=True)


def write_history_csv(path: str | os.PathLike[str], history: list[dict[str, Any]]) -> None:
    """Per-epoch rows for ``dvc plots``; ``stage`` says which model (first or refine) the row
    belongs to (refinement epochs continue the first model's numbering)."""
    keys = ["epoch", "train_loss", "val_loss", "val_nme", "lr", "images_per_s", "seconds"]
    with atomic_file(path, "w", encoding="utf-8") as handle:
        handle.write(",".join([*keys, "stage"]) + "\n")
        for row in history:
            cells = [f"{row[k]:.6g}" for k in keys] + [str(row.get("stage", "first"))]
            handle.write(",".join(cells) + "\n")
