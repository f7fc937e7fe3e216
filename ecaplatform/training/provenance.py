"""Where a run came from: code version, config, libraries, machine, SLURM job, checkpoint digests.

Run identity also lives here: one run id per logical run, the same across DDP ranks, resumes and SLURM requeues.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import subprocess
import uuid
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from ecaplatform.training.jobspec import RUN_ID_MAX_CHARS, check_identifier

RUN_ID_ENV_VAR = "ECA_RUN_ID"
REPO_ROOT = Path(__file__).resolve().parents[2]
LIBRARIES = ("torch", "torchvision", "lightning", "torchmetrics", "wandb", "sqlalchemy", "ecaplatform", "numpy")


def new_run_id() -> str:
    """A readable, sortable, unique id that W&B also accepts as a run id: `20261126-013012-1a2b3c4d`."""
    return f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:8]}"


def slurm_job_id(environ: dict[str, str] | None = None) -> str | None:
    """The SLURM job id, `JOBID_TASK` for an array task (the array's own job id is shared by its tasks)."""
    env = os.environ if environ is None else environ
    array_job, array_task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    if array_job and array_task:
        return f"{array_job}_{array_task}"
    return env.get("SLURM_JOB_ID")


def run_id_from_checkpoint(path: str | os.PathLike[str], state_key: str) -> str | None:
    """The run id a RunRecorder stored in a Lightning checkpoint, or None if it holds none or cannot be read."""
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    state = (checkpoint.get("callbacks") or {}).get(state_key) if isinstance(checkpoint, dict) else None
    run_id = state.get("run_id") if isinstance(state, dict) else None
    return run_id if isinstance(run_id, str) and run_id else None


def check_run_id(run_id: object, setting: str) -> str:
    """`run_id` if it can name the run's folder and W&B run, else UnsafeIdentifierError naming `setting`."""
    return check_identifier(run_id, setting, RUN_ID_MAX_CHARS)


def run_id_from_environment() -> str | None:
    """The run id the environment gives (`ECA_RUN_ID`, else the SLURM job's), checked; None if it gives none."""
    from_env = os.environ.get(RUN_ID_ENV_VAR)
    if from_env:
        return check_run_id(from_env, RUN_ID_ENV_VAR)
    job = slurm_job_id()
    if job:
        cluster = os.environ.get("SLURM_CLUSTER_NAME")
        return check_run_id(f"slurm-{cluster}-{job}" if cluster else f"slurm-{job}",
                            "the run id made of SLURM_CLUSTER_NAME and SLURM_JOB_ID (set ECA_RUN_ID instead)")
    return None


def resolve_run_id(ckpt_path: str | None = None, state_key: str = "RunRecorder") -> str:
    """The run's id, from the most stable source available, checked to be a safe folder name.

    1. `ECA_RUN_ID` (set by `eca submit`, also to the resumed run's id; survives a SLURM requeue, which keeps
       the job's environment);
    2. the SLURM job id (a requeued job keeps it), for jobs submitted with plain `sbatch`;
    3. the run id stored in the checkpoint a `fit --ckpt_path` resumes from;
    4. a new id.
    """
    from_environment = run_id_from_environment()
    if from_environment:
        return from_environment
    if ckpt_path and Path(ckpt_path).is_file():
        stored = run_id_from_checkpoint(ckpt_path, state_key)
        if stored:
            return check_run_id(stored, f"{ckpt_path}: the run id it holds,")
    return new_run_id()


def git_state(repo: Path = REPO_ROOT) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the code that runs, or (None, None) outside a git checkout."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit or None, bool(status.strip())


def config_hash(config: dict[str, Any]) -> str:
    """sha256 of the resolved config in a canonical JSON form (key order does not matter)."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def jsonable(value: Any) -> Any:
    """The config as plain JSON data (Namespaces, Paths and other objects become dicts or strings)."""
    return json.loads(json.dumps(value, default=lambda o: vars(o) if hasattr(o, "__dict__") else str(o)))


def library_versions() -> dict[str, Any]:
    versions: dict[str, Any] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    try:
        import torch

        versions["cuda"] = torch.version.cuda
        versions["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except ImportError:
        pass
    return versions


def hostname() -> str:
    return socket.gethostname()


def file_sha256(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()
