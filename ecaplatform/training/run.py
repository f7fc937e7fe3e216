"""A run's identity and its status in the store: the one place that decides either.

Identity: one id per logical run, the same on every DDP rank and node, across resumes and SLURM requeues
(`resolve_run_id`); one folder, <job folder>/<run id>/ (checkpoints/, csv/, config.yaml), so that `--ckpt_path
last|best` name one run's file (`identify`); the SLURM job that runs it.

Status: queued (`eca submit` handed it to SLURM) -> running (its process started it) -> succeeded | failed |
interrupted; a SLURM requeue leaves it interrupted until the requeued job starts it again. `RunStatus` makes these
moves, once each; while the run lives, a daemon thread refreshes `runs.heartbeat_at` (every ECA_HEARTBEAT_TIMEOUT_S
/ 5 seconds), so that a run killed without a chance to record its end (kill -9, the OOM killer, a lost node) is read
as `lost`. A thread, not batch hooks: a long legitimate pause (scanning a data set, torch.compile, writing a large
checkpoint) must not look like a dead process.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from ecaplatform.store import database, verification, writes
from ecaplatform.store.database import Store
from ecaplatform.store.schema import Run
from ecaplatform.training.jobspec import RUN_ID_MAX_CHARS, check_identifier

log = logging.getLogger(__name__)

RUN_ID_ENV_VAR = "ECA_RUN_ID"
RUNS_DIR = "runs"  # job folders are runs/<job.name>/ unless trainer.default_root_dir names one
CHECKPOINT_KEY = "RunRecorder"  # the callback state in a Lightning checkpoint that holds its run's id


# --- identity ----------------------------------------------------------------------------------------------------


def new_run_id() -> str:
    """A readable, sortable, unique id that W&B also accepts as a run id: `20261126-013012-1a2b3c4d`."""
    return f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:8]}"


def slurm_job_id() -> str | None:
    """The SLURM job id as scontrol names it, `JOBID_TASK` for an array task (the array's own id is shared)."""
    array_job, array_task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and array_task:
        return f"{array_job}_{array_task}"
    return os.environ.get("SLURM_JOB_ID") or None


def check_run_id(run_id: object, setting: str) -> str:
    """`run_id` if it can name the run's folder and W&B run, else UnsafeIdentifierError naming `setting`."""
    return check_identifier(run_id, setting, RUN_ID_MAX_CHARS)


def run_id_from_environment() -> str | None:
    """The run id the environment gives (`ECA_RUN_ID`, else the SLURM job's), checked; None if it gives none."""
    if from_env := os.environ.get(RUN_ID_ENV_VAR):
        return check_run_id(from_env, RUN_ID_ENV_VAR)
    if job := slurm_job_id():
        cluster = os.environ.get("SLURM_CLUSTER_NAME")
        return check_run_id(f"slurm-{cluster}-{job}" if cluster else f"slurm-{job}",
                            "the run id made of SLURM_CLUSTER_NAME and SLURM_JOB_ID (set ECA_RUN_ID instead)")
    return None


def resumed_run_id(command: str, ckpt_path: str | None) -> str | None:
    """The run a `fit --ckpt_path FILE` continues: the id the checkpoint holds (checked), else None."""
    if command != "fit" or not ckpt_path or not Path(ckpt_path).is_file():
        return None
    import torch

    try:
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    state = (checkpoint.get("callbacks") or {}).get(CHECKPOINT_KEY) if isinstance(checkpoint, dict) else None
    run_id = state.get("run_id") if isinstance(state, dict) else None
    return check_run_id(run_id, f"{ckpt_path}: the run id it holds,") if run_id else None


def resolve_run_id(command: str, ckpt_path: str | None = None) -> str:
    """The run's id from the most stable source there is: `ECA_RUN_ID` (set by `eca submit`, also to a resumed
    run's id; a SLURM requeue keeps the job's environment), the SLURM job id (for plain `sbatch`), the id in the
    checkpoint a fit resumes, else a new id."""
    return run_id_from_environment() or resumed_run_id(command, ckpt_path) or new_run_id()


@dataclass(frozen=True)
class RunIdentity:
    id: str
    folder: Path  # <job folder>/<id>/
    ckpt_path: str | None  # what the run starts from: --ckpt_path, with last|best made a file
    taken_from: str | None = None  # for last|best: which run's file ("run ID") or "checkpoint.dirpath"


def identify(command: str, job_name: str, root_dir: str | None, ckpt_path: str | None, from_run: str | None,
             dirpath: str | None) -> RunIdentity:  # fmt: skip
    """Who the run is and where it lives (ValueError, one line, for what cannot be). `--ckpt_path last|best` is
    `from_run`'s file, else this run's own (a requeued or resumed run, ECA_RUN_ID), else that of the job's run whose
    file is newest; in `dirpath` (checkpoint.dirpath) if the job sets one, which all its runs then share."""
    job_dir = Path(root_dir or os.path.join(RUNS_DIR, job_name))
    if from_run is not None:
        check_run_id(from_run, "--from_run")
    taken_from = None
    if ckpt_path in ("last", "best"):
        taken_from, path = _named_checkpoint(job_dir, ckpt_path, from_run, dirpath)
        ckpt_path = str(path)
    run_id = resolve_run_id(command, ckpt_path)
    return RunIdentity(run_id, job_dir / run_id, ckpt_path, taken_from)


def _named_checkpoint(job_dir: Path, which: str, from_run: str | None, dirpath: str | None) -> tuple[str, Path]:
    name = f"{which}.ckpt"
    if dirpath is not None:
        path = Path(dirpath) / name
        if not path.is_file():
            raise ValueError(f"--ckpt_path {which}: {path} does not exist; train first or give a .ckpt path")
        return "checkpoint.dirpath", path.absolute()
    own = run_id_from_environment()
    if from_run is None and own is not None and (job_dir / own / "checkpoints" / name).is_file():
        from_run = own
    if from_run is not None:
        path = job_dir / from_run / "checkpoints" / name
        if not path.is_file():
            raise ValueError(f"--ckpt_path {which} --from_run {from_run}: {path} does not exist; the job's runs are "
                             f"the folders in {job_dir}")  # fmt: skip
        return f"run {from_run}", path.absolute()
    found = [path for path in job_dir.glob(f"*/checkpoints/{name}") if path.is_file()]
    if not found:
        raise ValueError(f"--ckpt_path {which}: no run in {job_dir} has a {name}; train first (eca fit), or give a "
                         ".ckpt path")  # fmt: skip
    newest = max(found, key=lambda path: path.stat().st_mtime)
    return f"run {newest.parent.parent.name}", newest.absolute()


# --- status ------------------------------------------------------------------------------------------------------


class _Heartbeat:
    """Calls `beat` every `interval` seconds from a daemon thread until stopped or `beat` returns False."""

    def __init__(self, beat: Callable[[], bool], interval: float) -> None:
        self._beat, self._interval = beat, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="eca-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        warned = False
        while not self._stop.wait(self._interval):
            try:
                if not self._beat():  # the run ended (or another process took it over): nothing to keep alive
                    return
            except Exception as exc:  # a store that is briefly unreachable must not stop training
                if not warned:
                    log.warning("heartbeat not recorded (retrying every %.0f s): %s", self._interval, exc)
                    warned = True


class RunStatus:
    """The run's status moves, each a committed write of its own. This process moves only a run it queued or
    started, and ends it once: after a failure or a requeue, nothing it does later calls the run a success."""

    def __init__(self, run_id: str, store: Store | None = None) -> None:
        self.run_id = run_id
        self.store = store or Store.from_env()  # fixed now: the whole run writes to one store
        self._engine: Engine | None = None
        self._heartbeat: _Heartbeat | None = None
        self.started = self.ended = False

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self.store.writer()
        return self._engine

    def queued(self, **fields: Any) -> None:
        """`eca submit` hands the run to SLURM: queued until its job starts it (`fields`: job, model, config)."""
        writes.upsert_run(self.engine, self.run_id, **fields, status="queued")
        self.started = True

    def slurm_job(self, slurm_id: str) -> None:
        """The SLURM job that runs it (the status stays whatever the job has made it meanwhile)."""
        writes.upsert_run(self.engine, self.run_id, slurm_job_id=slurm_id)

    def start(self, **fields: Any) -> None:
        """Running, with the provenance in `fields`; beats until it ends."""
        writes.start_run(self.engine, self.run_id, **fields, slurm_job_id=slurm_job_id())
        self.started, self.ended = True, False
        self._heartbeat = _Heartbeat(lambda: writes.heartbeat(self.engine, self.run_id),
                                     verification.heartbeat_interval_s())  # fmt: skip

    def end(self, status: str, error: str | None = None, **fields: Any) -> bool:
        """succeeded | failed | interrupted, with the error; True if written (False: not ours, or ended already)."""
        self.stop_heartbeat()
        if not self.started or self.ended:
            return False
        self.ended = True
        writes.finish_run(self.engine, self.run_id, status, error=error, **fields)
        return True

    def requeued(self, where: str, signum: int) -> None:
        """SLURM requeued the job (its checkpoint is written): interrupted until the requeued job, with the same
        ECA_RUN_ID / SLURM job id, starts it again; whatever fails while SLURM stops this process is not recorded."""
        try:
            self.end("interrupted", f"preempted at {where}: requeued by SLURM (signal {signum}); the requeued job "
                                    "continues this run")  # fmt: skip
        except Exception as exc:  # never stand in the way of the requeue
            log.warning("could not mark run %s interrupted: %s", self.run_id, exc)
        self.ended = True

    def stop_heartbeat(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None

    def end_unfinished(self, status: str, error: str) -> bool:
        """End the run if the store still says queued or running after its process exited (it could not record
        its end); False if it did, never started a run, or the store cannot be read (nor is created here)."""
        try:
            with database.session_scope(self.store.engine(readonly=True)) as session:
                run = session.get(Run, self.run_id)
                if run is None or run.status not in ("queued", "running"):
                    return False
        except Exception:  # no store yet, or not reachable: the process recorded nothing either
            return False
        writes.finish_run(self.engine, self.run_id, status, error=error)
        return True
