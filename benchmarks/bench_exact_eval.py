"""Cost of the platform's exact evaluation against Lightning's default validation logging, on the same network.

    python benchmarks/bench_exact_eval.py                        # CPU: eca_resnet18, 64 px, batch 64, 20 batches
    python benchmarks/bench_exact_eval.py --rounds 21 --threads 1    # steadier on a busy machine
    python benchmarks/bench_exact_eval.py --device cuda --batch-size 256 --image-size 224 --num-workers 6

Two LightningModules with the same weights, data, batch size and Trainer settings, each timed over one whole
`trainer.validate` call per round (rounds interleaved, alternating order; median over rounds):
- exact: ImageClassifier as the platform evaluates: torchmetrics MulticlassAccuracy (top-1, top-5), MeanMetric
  (loss, weighted by samples) and SumMetric (samples) updated per batch, computed and logged once at epoch end
  (on DDP ranks that see uneven sample counts, with ExactDistributedSampler: every sample counted once);
- Lightning default: an ImageClassifier subclass whose validation_step logs the same three numbers per batch with
  `self.log(..., on_epoch=True)` (Lightning's batch-size weighted mean) and whose loader is a plain DataLoader
  (Lightning's default sampler: under DDP it would pad with duplicates).
The validation set ends on a short batch (--batches x batch size - half a batch), where an unweighted mean would
go wrong. The script prints how many samples each counted (both must count every sample once on one process) and
exits 1 when they differ, or when exact evaluation costs more than 2% over the Lightning default.
On CUDA with --num-workers 0 the batches are assembled in the main process, so any host synchronisation per batch
(torchmetrics' NaN checks, a Python number turned into a device tensor) stops that work from overlapping the GPU's:
that is measured too, but a real job's loader has workers.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import warnings
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ecaplatform.datamodules import SyntheticDataModule
from ecaplatform.training.classifier import ImageClassifier
from ecaplatform.training.quiet import silence_known_noise

TARGET_OVERHEAD = 0.02
NUM_CLASSES = 1000


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class LightningDefaultClassifier(ImageClassifier):
    """ImageClassifier's network and on-device normalisation, validated the way Lightning's docs show: per-batch
    values handed to `self.log` (on_epoch is the default in validation), averaged weighted by the batch size."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.samples_seen = 0  # a plain int, for the sample-count check only

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        images, targets = batch
        logits = self(images)
        loss = F.cross_entropy(logits.float(), targets)
        hits = logits.topk(min(5, logits.shape[1]), dim=1).indices == targets[:, None]
        self.log("val_loss", loss, on_epoch=True)
        self.log("val_top1", hits[:, 0].float().mean() * 100.0, on_epoch=True)
        self.log("val_top5", hits.any(dim=1).float().mean() * 100.0, on_epoch=True)
        self.samples_seen += len(targets)

    def on_validation_epoch_end(self) -> None:
        pass  # Lightning reduces what validation_step logged


def make_trainer(device: torch.device) -> L.Trainer:
    # The same settings for both; nothing that writes files or prints per batch.
    return L.Trainer(accelerator=device.type, devices=[device.index] if device.index is not None else 1,
                     precision="32-true", logger=False, enable_progress_bar=False, enable_model_summary=False,
                     enable_checkpointing=False)  # fmt: skip


def validate(module: L.LightningModule, loader: DataLoader, device: torch.device) -> tuple[float, dict[str, float]]:
    """(wall seconds of one trainer.validate, the metrics it returned)."""
    trainer = make_trainer(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    (metrics,) = trainer.validate(module, dataloaders=loader, verbose=False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started, {name: float(value) for name, value in metrics.items()}


EXACT, DEFAULT = "exact (platform)", "Lightning default"


def measure(args: argparse.Namespace, device: torch.device) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Per case, each round's validate wall time; and the last round's metrics and sample counts."""
    val_samples = args.batches * args.batch_size - args.batch_size // 2
    datamodule = SyntheticDataModule(
        batch_size=args.batch_size,
        image_size=args.image_size,
        num_classes=NUM_CLASSES,
        val_samples=val_samples,
        num_workers=args.num_workers,
        pin_memory=device.type == "cuda",
    )
    exact_loader = datamodule.val_dataloader()  # the platform's own (ExactDistributedSampler under DDP)
    # Lightning's default: a plain loader (under DDP Lightning would put a padding DistributedSampler in it); the
    # workers, pinning and persistence are the platform loader's, so that only the sampler differs.
    default_loader = DataLoader(exact_loader.dataset, batch_size=args.batch_size, shuffle=False,
                                num_workers=args.num_workers, pin_memory=exact_loader.pin_memory,
                                persistent_workers=args.num_workers > 0)  # fmt: skip
    L.seed_everything(0, verbose=False)
    exact = ImageClassifier(model_name=args.model, num_classes=NUM_CLASSES)
    default = LightningDefaultClassifier(model_name=args.model, num_classes=NUM_CLASSES)
    default.load_state_dict(exact.state_dict())
    cases: dict[str, tuple[L.LightningModule, DataLoader]] = {EXACT: (exact, exact_loader),
                                                               DEFAULT: (default, default_loader)}  # fmt: skip

    for module, loader in cases.values():  # warm-up: allocator, lazy initialisation, first-call costs
        validate(module, loader, device)
    times: dict[str, list[float]] = {name: [] for name in cases}
    metrics: dict[str, dict[str, float]] = {}
    for r in range(args.rounds):
        for name in cases if r % 2 == 0 else reversed(cases):
            module, loader = cases[name]
            if module is default:
                default.samples_seen = 0
            seconds, metrics[name] = validate(module, loader, device)
            times[name].append(seconds)
        log(f"  round {r + 1}/{args.rounds}: " + ", ".join(f"{name} {times[name][-1]:.3f} s" for name in cases))
    counted = {EXACT: int(round(metrics[EXACT]["val_samples"])), DEFAULT: default.samples_seen}
    outcomes = exact.eval_outcomes("val")  # the per-image outcomes the recorder would store: part of the cost
    kept = 0 if outcomes is None else len(outcomes["target"])
    return times, {"metrics": metrics, "counted": counted, "val_samples": val_samples, "outcomes": kept}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--rounds", type=int, default=11, help="rounds, each validating both once (alternating)")
    parser.add_argument("--batches", type=int, default=20, help="validation batches per validate (the last one short)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--model", default="eca_resnet18")
    parser.add_argument(
        "--num-workers", type=int, default=0, help="loader workers of both (SyntheticDataModule's default: 0)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for both (default: torch's own); 1 is steadier on a busy machine",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.batches < 1 or args.batch_size < 2:
        parser.error("need --rounds >= 1, --batches >= 1, --batch-size >= 2")

    silence_known_noise()  # Lightning's tips, as eca itself drops them
    device = torch.device(args.device)
    threads_before = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    log(f"exact evaluation on {device} ({threads} torch threads): {args.model}, {args.image_size}x{args.image_size}, "
        f"{args.batches} batches of {args.batch_size} (the last one short), {args.rounds} rounds")  # fmt: skip
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")  # --num-workers decides
        warnings.filterwarnings("ignore", message="You have overridden `on_after_batch_transfer`")  # ours
        try:
            times, seen = measure(args, device)
        finally:
            torch.set_num_threads(threads_before)  # run_all runs the next benchmark in this process

    counted, metrics, val_samples = seen["counted"], seen["metrics"], seen["val_samples"]
    # Both must report the same numbers on one process (float32 means differ in the last digits at most).
    agree = all(math.isclose(metrics[EXACT][key], metrics[DEFAULT][key], rel_tol=1e-4, abs_tol=1e-4)
                for key in ("val_top1", "val_top5", "val_loss"))  # fmt: skip
    median = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"\ntrainer.validate on {device}, {args.model} {args.image_size}x{args.image_size}, {val_samples} samples "
        f"in batches of {args.batch_size}, median of {args.rounds} rounds ({threads} torch threads)\n"
    )
    print("| case              | median per validate/s | median per batch/s | ratio |")
    print("|-------------------|----------------------:|-------------------:|------:|")
    for name in (DEFAULT, EXACT):
        print(f"| {name:<17} | {median[name]:>21.3f} | {median[name] / args.batches:>18.4f} | "
              f"{median[name] / median[DEFAULT]:>5.3f} |")  # fmt: skip
    overhead = median[EXACT] / median[DEFAULT] - 1.0
    # The spread of the rounds' own ratios says how far this machine's noise lets the numbers above be trusted.
    ratios = sorted(e / d for e, d in zip(times[EXACT], times[DEFAULT], strict=True))
    print(f"\nper-round ratio (exact / Lightning default): median {statistics.median(ratios):.3f}, "
          f"range {ratios[0]:.3f} .. {ratios[-1]:.3f}")  # fmt: skip
    same_count = counted[EXACT] == counted[DEFAULT] == val_samples
    print(f"samples counted on one process: exact {counted[EXACT]} (val_samples), Lightning default "
          f"{counted[DEFAULT]} (seen by validation_step), the set {val_samples}: "
          f"{'same' if same_count else 'DIFFERENT'}")  # fmt: skip
    print("metrics: " + ", ".join(f"{key} {metrics[EXACT][key]:.4f} / {metrics[DEFAULT][key]:.4f}"
                                  for key in ("val_top1", "val_top5", "val_loss"))
          + f" (exact / Lightning default): {'same' if agree else 'DIFFERENT'}")  # fmt: skip
    print(f"per-image outcomes kept by the exact evaluation (for the store): {seen['outcomes']} of {val_samples}")
    print(f"cost of exact evaluation: {overhead:+.1%}; target <= {TARGET_OVERHEAD:.0%}: "
          f"{'met' if overhead <= TARGET_OVERHEAD else 'MISSED'}")  # fmt: skip
    return 0 if same_count and agree and seen["outcomes"] == val_samples and overhead <= TARGET_OVERHEAD else 1


if __name__ == "__main__":
    sys.exit(main())
