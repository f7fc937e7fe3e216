"""A run's identity and its status in the store: the one place that decides either.

Identity: one id per logical run, the same on every DDP rank and node, across resumes and SLURM requeues
(`resolve_run_id`); one folder, <job folder>/<run id>/ (checkpoints/, csv/, config.yaml, a requeue's
hpc_ckpt_<n>.ckpt), so that `--ckpt_path last|best` name one run's file, of the job's model (`identify`); the SLURM
job that runs it. A run that another process still runs (fresh heartbeat) is not started a second time unless
forced (`refuse_if_alive`).

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
    taken_from: str | None = None  # for last|best: which run's file ("run ID ...") or "checkpoint.dirpath"


def identify(command: str, job_name: str, root_dir: str | None, ckpt_path: str | None, from_run: str | None,
             dirpath: str | None, model: dict[str, Any] | None = None, force: bool = False) -> RunIdentity:  # fmt: skip
    """Who the run is and where it lives (ValueError, one line, for what cannot be). `--ckpt_path last|best` is
    `from_run`'s file, else this run's own (a requeued or resumed run, ECA_RUN_ID), else that of the job's run of
    `model` (its architecture hparams; None: any) whose file is newest; in `dirpath` (checkpoint.dirpath) if the job
    sets one, which all its runs then share. `last` is the newest by training step of last.ckpt and the run's SLURM
    preemption checkpoint. A run that another process is still running is refused unless `force`."""
    job_dir = Path(root_dir or os.path.join(RUNS_DIR, job_name))
    if from_run is not None:
        check_run_id(from_run, "--from_run")
    taken_from = None
    if ckpt_path in ("last", "best"):
        taken_from, path = _named_checkpoint(job_dir, ckpt_path, from_run, dirpath, model)
        ckpt_path = str(path)
    continued = run_id_from_environment() or resumed_run_id(command, ckpt_path)
    if continued is not None and not force:
        refuse_if_alive(continued)
    run_id = continued or new_run_id()
    return RunIdentity(run_id, job_dir / run_id, ckpt_path, taken_from)


HPC_CHECKPOINT = "hpc_ckpt_"  # Lightning's preemption checkpoints: <run folder>/hpc_ckpt_<n>.ckpt, newest n last
ANY_RUN = "--from_run <id> (a folder name in {job_dir})"


def _named_checkpoint(job_dir: Path, which: str, from_run: str | None, dirpath: str | None,
                      model: dict[str, Any] | None) -> tuple[str, Path]:  # fmt: skip
    name, own = f"{which}.ckpt", run_id_from_environment()
    if dirpath is not None:
        path = Path(dirpath) / name
        found = [path] if path.is_file() else []
        found += _preemption_checkpoint(job_dir / own) if own and which == "last" else []
        if not found:
            raise ValueError(f"--ckpt_path {which}: {path} does not exist (checkpoint.dirpath, shared by the job's "
                             "runs); train first or give a .ckpt path")  # fmt: skip
        newest, why = _newest(found)
        return f"{'checkpoint.dirpath' if newest == path else f'run {own}'}{why}", newest.absolute()
    if from_run is None and own is not None and _candidates(job_dir / own, which):
        from_run = own
    if from_run is not None:
        found = _candidates(job_dir / from_run, which)
        if not found:
            raise ValueError(f"--ckpt_path {which} --from_run {from_run}: {job_dir / from_run / 'checkpoints' / name} "
                             f"does not exist; name another run with {ANY_RUN.format(job_dir=job_dir)}")  # fmt: skip
        newest, why = _newest(found)
        if model is not None and (theirs := _architecture(newest, model)) != model:
            raise ValueError(f"--ckpt_path {which} --from_run {from_run}: {newest} holds {theirs} but the job's model "
                             f"is {model}; name a run of the job's model with {ANY_RUN.format(job_dir=job_dir)}, or "
                             "pass --trust_ckpt_hparams true to use the checkpoint's own")  # fmt: skip
        return f"run {from_run}{why}", newest.absolute()
    runs = [(run, found) for run in job_dir.iterdir() if (found := _candidates(run, which))] if job_dir.is_dir() else []
    if not runs:
        raise ValueError(f"--ckpt_path {which}: no run in {job_dir} has a {name}; train first (eca fit), give a .ckpt "
                         f"path, or name a run with {ANY_RUN.format(job_dir=job_dir)}")  # fmt: skip
    others: list[str] = []
    for run, found in sorted(runs, key=lambda pair: max(path.stat().st_mtime for path in pair[1]), reverse=True):
        newest, why = _newest(found)
        if model is None or (theirs := _architecture(newest, model)) == model:
            skipped = f" (newer runs of other models passed over: {', '.join(others)})" if others else ""
            return f"run {run.name}{why}{skipped}", newest.absolute()
        others.append(f"{run.name} ({(theirs or {}).get('model_name', 'unreadable')})")
    raise ValueError(f"--ckpt_path {which}: no run in {job_dir} of the job's model {model} has a {name} (runs of other "
                     f"models: {', '.join(others)}); name one with --from_run <id> and pass --trust_ckpt_hparams true "
                     "to use its model, or give a .ckpt path")  # fmt: skip


def _candidates(run_dir: Path, which: str) -> list[Path]:
    """The files `--ckpt_path which` may mean in a run's folder: its {which}.ckpt and, for last, its newest SLURM
    preemption checkpoint (written by a requeue; it may be newer than last.ckpt, which is written per epoch)."""
    path = run_dir / "checkpoints" / f"{which}.ckpt"
    return ([path] if path.is_file() else []) + (_preemption_checkpoint(run_dir) if which == "last" else [])


def _preemption_checkpoint(run_dir: Path) -> list[Path]:
    numbered = [(int(path.stem[len(HPC_CHECKPOINT):]), path) for path in run_dir.glob(f"{HPC_CHECKPOINT}*.ckpt")
                if path.stem[len(HPC_CHECKPOINT):].isdigit() and path.is_file()]  # fmt: skip
    return [max(numbered)[1]] if numbered else []


def _newest(found: list[Path]) -> tuple[Path, str]:
    """The file that training reached furthest in (global step, then epoch, as the file records them; mtime only
    breaks a tie: a copied or restored file's mtime says nothing), and why, when there was a choice. An unreadable
    file (a preemption checkpoint cut off while it was written) is never preferred to a readable one."""
    if len(found) == 1:
        return found[0], ""
    progress = {path: _progress(path) for path in found}
    newest = max(found, key=lambda path: (progress[path], path.stat().st_mtime))
    steps = ", ".join(f"{path.name} {'unreadable' if progress[path] < (0,) else f'at step {progress[path][0]}'}"
                      for path in found)  # fmt: skip
    return newest, f" (the furthest trained: {steps})"


def _load_summary(path: Path) -> dict[str, Any] | None:
    import torch

    try:  # mmap: the weights are not read, only the small records around them
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return None
    return checkpoint if isinstance(checkpoint, dict) else None


def _progress(path: Path) -> tuple[int, ...]:
    checkpoint = _load_summary(path)
    if checkpoint is None:
        return (-1,)
    return int(checkpoint.get("global_step") or 0), int(checkpoint.get("epoch") or 0)


def _architecture(path: Path, model: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint's saved values of `model`'s keys (None if it cannot be read)."""
    checkpoint = _load_summary(path)
    saved = (checkpoint or {}).get("hyper_parameters") or {}
    return {key: saved.get(key) for key in model} if checkpoint is not None else None


def refuse_if_alive(run_id: str) -> None:
    """ValueError (one line) if the store says another process runs `run_id` now: stored running, and its heartbeat
    fresher than verification.heartbeat_timeout_s(). Two processes training one run would overwrite each other's
    checkpoints and records. Not refused: a requeue of the run's own SLURM job (SLURM stopped the earlier start),
    and the DDP processes after the first (they join the run their first process started)."""
    if any(os.environ.get(name, "0") != "0" for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")):
        return
    engine = Store.from_env().reader()
    if engine is None:
        return
    try:
        with database.session_scope(engine) as session:
            run = session.get(Run, run_id) if database.has_tables(engine) else None
    except database.SchemaBehind:  # an older schema, which this run migrates: no run in it beats yet
        run = None
    finally:
        engine.dispose()
    if run is None or verification.run_status(run.status, run.heartbeat_at, run.started_at) != "running":
        return
    if run.slurm_job_id is not None and run.slurm_job_id == slurm_job_id():
        return
    beat = run.heartbeat_at or run.started_at
    age = (datetime.now(timezone.utc) - beat.replace(tzinfo=beat.tzinfo or timezone.utc)).total_seconds() if beat else 0
    where = ", ".join([*([f"host {run.host}"] if run.host else []),
                       *([f"SLURM job {run.slurm_job_id}"] if run.slurm_job_id else [])])  # fmt: skip
    raise ValueError(f"run {run_id} is still running{f' ({where})' if where else ''}: its heartbeat is {age:.0f} s old "
                     f"(it is lost after {verification.heartbeat_timeout_s():.0f} s); stop that process or wait until "
                     "`eca runs` shows it lost, or pass --force to resume it anyway")  # fmt: skip


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

    def recorded(self) -> bool:
        """Whether the store holds the run (False also where the store cannot be read: nothing is recorded there)."""
        try:
            with database.session_scope(self.store.engine(readonly=True)) as session:
                return session.get(Run, self.run_id) is not None
        except Exception:
            return False

    def ended_unrecorded(self, status: str, error: str, **fields: Any) -> None:
        """Record the run its process ended before recording (`fields`: job, model, config, as its launcher knows
        them), ended at once with `error`: a failure before the start still leaves a run to find."""
        writes.upsert_run(self.engine, self.run_id, **fields, status=status)
        writes.finish_run(self.engine, self.run_id, status, error=error)
