"""SLURM's word on runs the store still calls queued or running (torch-free, read-only).

A SLURM job cancelled while queued, killed past its time limit or with its node never lets Python record its run's
end: the store keeps `queued`/`running` (a running run turns `lost` only when its heartbeat is old). SLURM knows:
`slurm_ended` asks it, in one call for all the runs a reader shows, which of their jobs have ended and how; a
reader then shows the run with `shown_status`. `sacct` (accounting) is asked first; where it is disabled or does
not know a job, `squeue --states=all` (which also lists jobs that ended within slurmctld's MinJobAge, 300 s by
default). A job neither knows is left as the store says. Answers are cached for CACHE_S; without SLURM on PATH, or
when it does not answer within TIMEOUT_S, nothing changes.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from ecaplatform.store.schema import Run

CACHE_S = 30.0  # a board redrawn every few seconds asks SLURM at most this often per job
TIMEOUT_S = 5.0  # a slurmctld that does not answer must not hang a reader
ASKED_STATUSES = ("queued", "running")  # stored statuses whose job may have ended unseen
OVERRIDDEN_STATUSES = (*ASKED_STATUSES, "lost")  # shown statuses SLURM's word replaces (lost: the same, derived)
# SLURM's end states -> the run's shown status. COMPLETED here means the job ended without the run recording its end.
ENDED: dict[str, str] = {
    "CANCELLED": "cancelled", "REVOKED": "cancelled", "DEADLINE": "timed out", "TIMEOUT": "timed out",
    "FAILED": "failed", "NODE_FAIL": "failed", "BOOT_FAIL": "failed", "OUT_OF_MEMORY": "failed",
    "PREEMPTED": "interrupted", "COMPLETED": "lost",
}  # fmt: skip
SHOWN_SLURM_STATUSES = tuple(sorted(set(ENDED.values()) - {"failed", "interrupted", "lost"}))  # the new words


@dataclass(frozen=True)
class SlurmEnd:
    """How SLURM says a run's job ended."""

    state: str  # SLURM's own word: CANCELLED, TIMEOUT, OUT_OF_MEMORY, ...
    exit_code: str | None = None  # "0:15" (code:signal), where the source gives it
    ended_at: str | None = None  # SLURM's End time, where the source gives it

    @property
    def status(self) -> str:
        """The run's status to show: cancelled, timed out, failed, interrupted or lost."""
        return ENDED[self.state]


_cache: dict[str, tuple[float, SlurmEnd | None]] = {}  # SLURM job id -> (when asked, its end or None: not ended)
_lock = threading.Lock()


def slurm_ended(runs: Iterable[tuple[str, str | None]]) -> dict[str, SlurmEnd]:
    """For (run id, SLURM job id) pairs: the runs whose job SLURM says has ended, and how (all asked at once)."""
    pairs = [(run_id, str(job_id)) for run_id, job_id in runs if job_id]
    now = time.monotonic()
    with _lock:
        ask = sorted({job for _, job in pairs if job not in _cache or now - _cache[job][0] > CACHE_S})
        if ask:  # what SLURM did not name as ended (or no answer at all) is left as the store says, CACHE_S long
            answered = _ask_slurm(ask)
            _cache.update({job: (now, answered.get(job)) for job in ask})
        known = {job: end for job, (_, end) in _cache.items()}
    return {run_id: end for run_id, job in pairs if (end := known.get(job)) is not None}


def ended_runs(session: Session) -> dict[str, SlurmEnd]:
    """`slurm_ended` for every run the store calls queued or running that names a SLURM job (one query)."""
    rows = session.execute(select(Run.id, Run.slurm_job_id).where(Run.status.in_(ASKED_STATUSES),
                                                                  Run.slurm_job_id.is_not(None)))  # fmt: skip
    return slurm_ended((run_id, job_id) for run_id, job_id in rows)


def shown_status(status: str, end: SlurmEnd | None) -> str:
    """The status to show for a run shown as `status` (stored, or lost) whose job SLURM says ended as `end`."""
    return end.status if end is not None and status in OVERRIDDEN_STATUSES else status


def clear_cache() -> None:
    """Forget every answer (tests; a reader that must see a change at once)."""
    with _lock:
        _cache.clear()


def _ask_slurm(jobs: list[str]) -> dict[str, SlurmEnd]:
    """The ended ones among `jobs`, by job id: accounting's word, else slurmctld's for the jobs it does not know."""
    known: dict[str, SlurmEnd] = {}
    for source in (_sacct, _squeue):
        if remaining := [job for job in jobs if job not in known]:
            known.update({job: end for job, end in (source(remaining) or {}).items() if job in remaining})
    return {job: end for job, end in known.items() if end.state in ENDED}


def _run(command: list[str]) -> subprocess.CompletedProcess[str] | None:
    if shutil.which(command[0]) is None:
        return None
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None


def _sacct(jobs: list[str]) -> dict[str, SlurmEnd]:
    """Accounting's record (-X: the allocation, not its steps; its newest attempt after a requeue)."""
    proc = _run(["sacct", "-j", ",".join(jobs), "-X", "-n", "-P", "-o", "JobID,State,ExitCode,End"])
    if proc is None or proc.returncode != 0:  # e.g. "Slurm accounting storage is disabled"
        return {}
    fields = [line.split("|") for line in proc.stdout.splitlines()]
    # "CANCELLED by 1000": the state is its first word
    return {f[0]: SlurmEnd(f[1].split()[0], f[2] or None, f[3] or None) for f in fields if len(f) >= 4 and f[1]}


def _squeue(jobs: list[str]) -> dict[str, SlurmEnd]:
    """slurmctld's own view: pending and running jobs, and those that ended within MinJobAge. It refuses a list
    that names no job it knows ("Invalid job id specified"): then it knows none."""
    proc = _run(["squeue", "-h", "--states=all", "-j", ",".join(jobs), "-o", "%i|%T|%e"])
    if proc is None or proc.returncode != 0:
        return {}
    fields = [line.strip().split("|") for line in proc.stdout.splitlines()]
    return {f[0]: SlurmEnd(f[1], None, None if f[2] in ("", "N/A", "NONE") else f[2])
            for f in fields if len(f) == 3 and f[1]}  # fmt: skip
