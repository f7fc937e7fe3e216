"""Per-training-step cost of `eca fit` against a hand-written PyTorch loop: same model, data, optimizer and steps.

    python benchmarks/bench_framework_overhead.py                       # CPU: eca_resnet18, 96 px, batch 32
    python benchmarks/bench_framework_overhead.py --rounds 5 --steps 40 --threads 1
    python benchmarks/bench_framework_overhead.py --device cuda --batch-size 128 --image-size 224 --steps 60 \
        --num-workers 6

The two sides:
- the hand loop: `create_model`, SGD with the job's settings and the same learning-rate schedule (`LRSchedule`),
  iterating the very DataLoader that the job's SyntheticDataModule returns, the classifier's uint8 -> float
  normalisation on the device, cross-entropy, zero_grad, backward, step (Lightning's order);
- `eca fit`, in this process, through `ecaplatform.cli.main.main` (the `eca` command's own entry point) on a temporary
  job YAML, with everything a user's run has: the ImageClassifier (its per-step torchmetrics updates and
  `self.log`), ThroughputMonitor, the progress bar, the CSV logger, W&B (offline), the run recorder writing to a
  temporary SQLite store (ECA_DB_URL), checkpointing. One extra callback stamps time.perf_counter() at every
  on_train_batch_start: the interval between two stamps is one whole step (fetch, transfer, forward, backward,
  optimizer, every hook and logger).
Each side skips its first --warmup steps. Start-up (parsing, model building, W&B and store set-up) and tear-down
are not per-step costs and are not counted.

Interleaving (--interleave), so that noise from a shared machine hits both sides alike:
- `rounds` (default on CUDA): each round runs a whole hand loop and a whole `eca fit` of the same steps, in
  alternating order; on CUDA each side synchronises only at the two ends of its measured window, so the hand loop
  keeps its asynchronous launches and whatever `eca fit` synchronises per step counts against it;
- `steps` (default on the CPU): each round is one `eca fit` run, and the timing callback runs one step of the
  hand loop (its own model, optimizer and loader) at each batch start and takes its time out of that `eca fit`
  step: the two sides alternate step by step, 0.1-0.5 s apart, so load from other processes that changes over
  seconds hits both alike. (Rounds of whole runs are tens of seconds apart; on the project's shared 2-core
  machine their per-step times differed up to 8x between rounds.)
On CUDA every host synchronisation inside a step (here: torchmetrics' NaN checks and Python numbers made device
tensors in the classifier's per-step metric updates, ThroughputMonitor's synchronize, the progress bar's loss)
lets the GPU idle while the CPU prepares the next step, which the hand loop does while the GPU still computes.
Reported: the median over rounds of each round's median step (the typical step) and of each round's mean step
(wall time of the window / steps: it includes the steps that write the CSV/W&B logs). Target: overhead <= 3% by
both; the script exits 1 when either is above it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
import yaml

TARGET_OVERHEAD = 0.03
CASES = ("hand-written loop", "eca fit")
TIMER_MODULE = "_eca_bench_step_timer"  # importable name of StepTimer, for the CLI's class_path
# What `eca fit` runs with, as tests run it (tests/conftest.py): its own store, W&B offline, no inherited run id.
INHERITED_RUN_VARIABLES = ("ECA_RUN_ID", "SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_NTASKS",
                           "SLURM_PROCID")  # fmt: skip
# The demo job's optimisation (jobs/demo_cpu.yaml); the hand loop reads the same values.
MODEL = {"model_name": "eca_resnet18", "optimizer": {"lr": 0.1, "momentum": 0.9, "weight_decay": 5.0e-4},
         "schedule": {"kind": "cosine", "warmup_epochs": 0.5}}  # fmt: skip


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def total_steps(args: argparse.Namespace) -> int:
    return args.warmup + args.steps + 1  # steps + 1 stamps bound `steps` intervals


def data_args(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    return {
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "num_classes": 1000,
        # One epoch longer than the run: no validation or epoch-end checkpoint falls inside the measured window.
        "train_samples": args.batch_size * (total_steps(args) + 5),
        "val_samples": args.batch_size * 2,
        "num_workers": args.num_workers,
        "pin_memory": device.type == "cuda",  # explicit, so the hand loop's loader is the same on a GPU
    }


class HandLoop:
    """A hand-written training loop on the job's model, optimizer, schedule and data, one step per call."""

    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        from ecaplatform.datamodules import IMAGENET_MEAN, IMAGENET_STD, SyntheticDataModule
        from ecaplatform.models import create_model
        from ecaplatform.training.classifier import LRSchedule

        L.seed_everything(0, verbose=False)
        datamodule = SyntheticDataModule(**data_args(args, device))
        loader = datamodule.train_dataloader()  # what the job's trainer gets from the same data module
        self.device = device
        self.model = create_model(MODEL["model_name"], num_classes=datamodule.num_classes).to(device).train()
        self.optimizer = torch.optim.SGD(self.model.parameters(), **MODEL["optimizer"])
        self.scheduler = LRSchedule(**MODEL["schedule"]).scheduler(self.optimizer, len(loader), total_steps(args))
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255.0
        self.batches = iter(loader)

    def step(self) -> None:
        images, targets = next(self.batches)
        images = images.to(self.device, non_blocking=True)
        targets = targets.to(self.device, non_blocking=True)
        images = (images.float() - self.mean) / self.std
        loss = F.cross_entropy(self.model(images).float(), targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()


class StepTimer(L.Callback):
    """perf_counter() at each training batch's start, less the time spent in the partner's steps; with a partner
    (a HandLoop), one partner step per batch, timed on its own. The CLI builds the instance from its class path,
    so the settings and results of the latest run live on the class."""

    stamps: list[float] = []
    partner_times: list[float] = []
    partner: HandLoop | None = None
    sync_at: tuple[int, ...] = ()  # batch indices at which to synchronise CUDA first (the window's ends)
    threads: int = 0

    def __init__(self) -> None:
        StepTimer.stamps, StepTimer.partner_times = [], []
        self._excluded = 0.0  # partner time so far: taken out of the stamps

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        StepTimer.threads = torch.get_num_threads()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:  # fmt: skip
        partner = StepTimer.partner
        if batch_idx in StepTimer.sync_at or partner is not None:
            _sync(pl_module.device)
        start = time.perf_counter()
        StepTimer.stamps.append(start - self._excluded)
        if partner is not None:
            partner.step()
            _sync(partner.device)
            spent = time.perf_counter() - start
            StepTimer.partner_times.append(spent)
            self._excluded += spent


def _timer_class_path() -> str:
    """StepTimer under a module name jsonargparse can import, whether this file runs as a script or from run_all."""
    module = types.ModuleType(TIMER_MODULE)
    StepTimer.__module__ = TIMER_MODULE
    module.StepTimer = StepTimer  # type: ignore[attr-defined]
    sys.modules[TIMER_MODULE] = module
    return f"{TIMER_MODULE}.StepTimer"


@contextlib.contextmanager
def isolated_environment(tmp: Path, wandb_mode: str) -> Iterator[None]:
    """Store, W&B and run id of the benchmark's own, restored afterwards (run_all runs other benchmarks next)."""
    values = {"ECA_DB_URL": f"sqlite:///{tmp / 'runs.db'}", "WANDB_MODE": wandb_mode, "WANDB_DIR": str(tmp / "wandb"),
              "WANDB_SILENT": "true"}  # fmt: skip
    saved = {name: os.environ.get(name) for name in (*values, *INHERITED_RUN_VARIABLES)}
    os.environ.update(values)
    for name in INHERITED_RUN_VARIABLES:
        os.environ.pop(name, None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def write_job(path: Path, args: argparse.Namespace, device: torch.device) -> None:
    job = {
        "seed_everything": 0,
        "job": {"name": "bench_overhead", "launcher": "local"},
        "model": MODEL,
        "data": {"class_path": "ecaplatform.datamodules.SyntheticDataModule", "init_args": data_args(args, device)},
        "trainer": {
            "accelerator": device.type,
            "devices": [device.index] if device.index is not None else 1,
            "precision": "32-true",
            "max_steps": total_steps(args),
            "log_every_n_steps": args.log_every_n_steps,
            "default_root_dir": str(path.parent / "runs"),
            "callbacks": [{"class_path": _timer_class_path()}],
        },
    }
    path.write_text(yaml.safe_dump(job, sort_keys=False))


def window(stamps: list[float], args: argparse.Namespace) -> list[float]:
    """The per-step intervals of the measured window: stamps[warmup] .. stamps[warmup + steps]."""
    if len(stamps) < total_steps(args):
        raise RuntimeError(f"expected {total_steps(args)} step stamps, got {len(stamps)}")
    measured = stamps[args.warmup : args.warmup + args.steps + 1]
    return [b - a for a, b in zip(measured, measured[1:], strict=False)]


def run_eca_fit(job_path: Path, args: argparse.Namespace, partner: HandLoop | None = None) -> list[float]:
    from ecaplatform.cli.main import main as eca_main

    StepTimer.sync_at = (args.warmup, args.warmup + args.steps)
    StepTimer.partner = partner
    try:
        with contextlib.redirect_stdout(sys.stderr):  # Lightning's summary and the run's paths: progress, not results
            code = eca_main(["fit", "--config", str(job_path)])
    finally:
        StepTimer.partner = None
    if code != 0:
        raise RuntimeError(f"eca fit exited with {code}")
    return window(StepTimer.stamps, args)


def run_hand_loop(args: argparse.Namespace, device: torch.device) -> list[float]:
    loop = HandLoop(args, device)
    stamps: list[float] = []
    for step in range(total_steps(args)):
        if step in (args.warmup, args.warmup + args.steps):
            _sync(device)
        stamps.append(time.perf_counter())
        loop.step()
    return window(stamps, args)


def measure(args: argparse.Namespace, device: torch.device, tmp: Path) -> dict[str, list[list[float]]]:
    """Per case, each round's measured step times (seconds)."""
    job_path = tmp / "bench_overhead.yaml"
    write_job(job_path, args, device)
    steps: dict[str, list[list[float]]] = {case: [] for case in CASES}
    for r in range(args.rounds):
        started = time.perf_counter()
        if args.interleave == "steps":
            steps[CASES[1]].append(run_eca_fit(job_path, args, partner=HandLoop(args, device)))
            steps[CASES[0]].append(StepTimer.partner_times[args.warmup : args.warmup + args.steps])
        else:
            for case in CASES if r % 2 == 0 else reversed(CASES):
                steps[case].append(run_hand_loop(args, device) if case == CASES[0] else run_eca_fit(job_path, args))
        if StepTimer.threads != torch.get_num_threads():
            raise RuntimeError(f"eca fit trained with {StepTimer.threads} torch threads, the hand loop with "
                               f"{torch.get_num_threads()}: the comparison would be unfair")  # fmt: skip
        log(f"  round {r + 1}/{args.rounds} ({time.perf_counter() - started:.0f} s): " + ", ".join(
            f"{case} median {statistics.median(steps[case][-1]):.4f} s, mean {statistics.fmean(steps[case][-1]):.4f} s"
            for case in CASES))  # fmt: skip
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (see --interleave)")
    parser.add_argument("--steps", type=int, default=30, help="measured training steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="steps skipped at the start of each run")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--interleave", choices=("steps", "rounds"), default=None,
                        help="steps: alternate step by step inside each eca fit run (default on the CPU); rounds: "
                             "alternate whole runs (default on CUDA)")  # fmt: skip
    parser.add_argument(
        "--num-workers", type=int, default=0, help="data.num_workers of both loaders (SyntheticDataModule's default: 0)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for both (default: torch's own); 1 is steadier on a busy machine",
    )
    parser.add_argument("--log-every-n-steps", type=int, default=5, help="trainer.log_every_n_steps (the demo's: 5)")
    parser.add_argument(
        "--wandb",
        choices=("offline", "disabled"),
        default="offline",
        help="W&B mode of the eca fit runs (offline: what a user without an API key gets)",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.steps < 2 or args.warmup < 1:
        parser.error("need --rounds >= 1, --steps >= 2, --warmup >= 1")

    device = torch.device(args.device)
    if args.interleave is None:
        args.interleave = "rounds" if device.type == "cuda" else "steps"
    threads_before = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    log(f"framework overhead on {device} ({threads} torch threads): {MODEL['model_name']}, "
        f"{args.image_size}x{args.image_size}, batch {args.batch_size}, {args.warmup} warm-up + {args.steps} "
        f"measured steps per run, {args.rounds} rounds interleaved by {args.interleave}, W&B {args.wandb}")  # fmt: skip
    try:
        with (
            tempfile.TemporaryDirectory(prefix="eca-bench-overhead-") as tmp,
            isolated_environment(Path(tmp), args.wandb),
        ):
            steps = measure(args, device, Path(tmp))
    finally:
        torch.set_num_threads(threads_before)  # run_all runs the next benchmark in this process

    median = {case: statistics.median(statistics.median(r) for r in rounds) for case, rounds in steps.items()}
    mean = {case: statistics.median(statistics.fmean(r) for r in rounds) for case, rounds in steps.items()}
    base = CASES[0]
    print(f"\nper training step on {device}, {MODEL['model_name']} {args.image_size}x{args.image_size}, batch "
          f"{args.batch_size}, median over {args.rounds} rounds of {args.steps} steps interleaved by "
          f"{args.interleave} ({threads} torch threads, W&B {args.wandb})\n")  # fmt: skip
    print("| case              | median per step/s | ratio | mean per step/s | ratio |")
    print("|-------------------|------------------:|------:|----------------:|------:|")
    for case in CASES:
        print(f"| {case:<17} | {median[case]:>17.4f} | {median[case] / median[base]:>5.3f} | {mean[case]:>15.4f} | "
              f"{mean[case] / mean[base]:>5.3f} |")  # fmt: skip
    overheads = {"median": median[CASES[1]] / median[base] - 1.0, "mean": mean[CASES[1]] / mean[base] - 1.0}
    # The spread of the rounds' own ratios says how far this machine's noise lets the numbers above be trusted.
    ratios = sorted(statistics.median(f) / statistics.median(h) for h, f in zip(*steps.values(), strict=True))
    print(f"\nper-round ratio of median steps (eca fit / hand loop): {', '.join(f'{r:.3f}' for r in ratios)}")
    missed = [kind for kind, overhead in overheads.items() if overhead > TARGET_OVERHEAD]
    print(f"overhead of eca fit per step: {overheads['median']:+.1%} (median step), {overheads['mean']:+.1%} "
          f"(mean step); target <= {TARGET_OVERHEAD:.0%}: {'MISSED' if missed else 'met'}")  # fmt: skip
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
