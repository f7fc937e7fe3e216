"""`eca submit JOB.yaml`: check a job file, then run it locally or submit it to SLURM.

A job YAML is a LightningCLI config plus a `job:` section (ecaplatform.jobspec.JobSpec). Everything is
checked before anything runs or is submitted: the config against the same LightningCLI parser `eca fit` uses,
the `job:` section's keys and types, the claim id, the data root, and that SLURM's task count matches
`trainer.devices` (Lightning only detects a SLURM job when they agree).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ecaplatform.jobspec import JobSpec, Resources

COMMANDS = ("fit", "validate", "test")
DEFAULT_SLURM_DIR = Path("runs") / "slurm"


class JobFileError(ValueError):
    """A job file that must not be submitted; the message names the file and the field."""


@dataclass
class Job:
    path: Path
    config: dict[str, Any]  # the whole YAML as written
    spec: JobSpec


# --- reading and checking a job file -----------------------------------------------------------------------------


def _check_keys(section: Mapping[str, Any], cls: type, where: str) -> None:
    """Reject keys the dataclass does not have (a typo must not silently fall back to a default)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in section.items():
        if key not in fields:
            raise JobFileError(f"{where}.{key}: unknown key; allowed: {', '.join(fields)}")
        if key == "resources" and isinstance(value, Mapping):
            _check_keys(value, Resources, f"{where}.resources")


def parse_job_section(section: Any, path: Path | str = "<job>") -> JobSpec:
    """The `job:` section as a JobSpec, with unknown keys and wrong types reported by their dotted name."""
    if section is None:
        return JobSpec()
    if not isinstance(section, Mapping):
        raise JobFileError(f"{path}: job: must be a mapping of JobSpec fields, got {type(section).__name__}")
    _check_keys(section, JobSpec, "job")
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--job", type=JobSpec)
    try:
        parsed = parser.parse_object({"job": dict(section)})
    except Exception as exc:  # jsonargparse's ArgumentError names the key, e.g. "job.resources.nodes"
        raise JobFileError(f"{path}: {exc}".replace("\n", " ")) from exc
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    return instantiate(parsed).job


def _section(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A config section's arguments, whether written flat or as class_path/init_args."""
    node = config.get(name) or {}
    if not isinstance(node, Mapping):
        return {}
    init_args = node.get("init_args")
    flat = {k: v for k, v in node.items() if k != "init_args"}
    return {**flat, **(init_args if isinstance(init_args, Mapping) else {})}


def load_job(path: str | os.PathLike[str]) -> Job:
    path = Path(path)
    if not path.is_file():
        raise JobFileError(f"{path}: no such job file")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise JobFileError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(config, dict):
        raise JobFileError(f"{path}: expected a LightningCLI config (a mapping with model:, data:, trainer:, job:)")
    return Job(path=path, config=config, spec=parse_job_section(config.get("job"), path))


def override_value(overrides: Sequence[str], *keys: str) -> str | None:
    """The value a command-line override gives one of `keys` (`--data.root /x` or `--data.root=/x`), if any."""
    value = None
    for index, arg in enumerate(overrides):
        for key in keys:
            if arg == f"--{key}" and index + 1 < len(overrides):
                value = overrides[index + 1]
            elif arg.startswith(f"--{key}="):
                value = arg.split("=", 1)[1]
    return value


def check_job(job: Job, overrides: Sequence[str] = ()) -> None:
    """The checks that need no LightningCLI: the claim, the data root, SLURM tasks vs trainer.devices."""
    if job.spec.claim:
        from ecaplatform.tracking.claims import claim_ids

        known = claim_ids()
        if job.spec.claim not in known:
            raise JobFileError(
                f"{job.path}: job.claim: {job.spec.claim!r} is not a claim id; known ids look like {known[0]!r} "
                "(`eca claims --json` lists them all)"
            )
    data = _section(job.config, "data")
    for key in ("root", "data_dir", "data_root"):
        value = override_value(overrides, f"data.init_args.{key}", f"data.{key}") or data.get(key)
        if value is not None and not Path(str(value)).expanduser().is_dir():
            raise JobFileError(f"{job.path}: data.init_args.{key}: {value} does not exist or is not a folder")
    if job.spec.launcher == "slurm":
        devices = _section(job.config, "trainer").get("devices")
        tasks = tasks_per_node(job.spec.resources)
        numeric = isinstance(devices, int) or (isinstance(devices, str) and devices.isdigit())
        if numeric and int(devices) != tasks:
            field = "gpus_per_node" if job.spec.resources.gpus_per_node else "tasks_per_node"
            raise JobFileError(
                f"{job.path}: trainer.devices is {devices} but SLURM would start {tasks} task(s) per node "
                f"(job.resources.{field}); make them equal so Lightning runs one process per task"
            )
        num_nodes = _section(job.config, "trainer").get("num_nodes", 1)
        if int(num_nodes) != job.spec.resources.nodes:
            raise JobFileError(
                f"{job.path}: trainer.num_nodes is {num_nodes} but job.resources.nodes is {job.spec.resources.nodes}"
            )


def eca_command() -> list[str]:
    """How to run `eca` with this very interpreter (the job must use the same environment)."""
    return [sys.executable, "-m", "ecaplatform"]


def check_config(path: Path, command: str, overrides: Sequence[str] = ()) -> None:
    """Validate the config with the LightningCLI parser itself (`--print_config` parses, checks and exits)."""
    # In a child process: the parse imports torch and Lightning, and --print_config ends with sys.exit.
    proc = subprocess.run(
        [*eca_command(), command, "--config", str(path), *overrides, "--print_config"], capture_output=True, text=True
    )
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        # jsonargparse prints the whole usage first; the part that names the bad key starts at "error:".
        starts = [i for i, line in enumerate(lines) if line.startswith("error:") or ": error:" in line]
        detail = "\n".join(lines[starts[-1] :] if starts else lines[-15:])
        raise JobFileError(f"{path}: `eca {command} --config` rejects it:\n{detail}")


# --- SLURM -------------------------------------------------------------------------------------------------------


def tasks_per_node(resources: Resources) -> int:
    return resources.gpus_per_node if resources.gpus_per_node > 0 else resources.tasks_per_node


def sbatch_script(
    job: Job, command: str, run_id: str, log_dir: Path, workdir: Path, overrides: Sequence[str] = ()
) -> str:
    """The batch script: one task per device, Lightning's requeue signal, srun starting every rank."""
    r = job.spec.resources
    directives = [
        f"--job-name={job.spec.name}",
        f"--nodes={r.nodes}",
        f"--ntasks-per-node={tasks_per_node(r)}",
        f"--cpus-per-task={r.cpus_per_task}",
        f"--mem={r.mem}",
        f"--time={r.time}",
        *([f"--gres=gpu:{r.gpus_per_node}"] if r.gpus_per_node > 0 else []),
        *([f"--partition={r.partition}"] if r.partition else []),
        *([f"--account={r.account}"] if r.account else []),
        "--signal=SIGUSR1@90",  # Lightning saves a checkpoint and requeues the job 90 s before the time limit
        "--requeue",
        "--open-mode=append",  # a requeued job appends to the same log
        f"--output={log_dir.resolve() / f'{job.spec.name}-%j.out'}",
    ]
    exports = {"ECA_RUN_ID": run_id}
    for name in ("ECA_DB_URL", "WANDB_MODE", "WANDB_DIR", "XDG_DATA_HOME"):
        if os.environ.get(name):
            exports[name] = os.environ[name]
    run = [*eca_command(), command, "--config", str(job.path.resolve()), *overrides]
    lines = ["#!/bin/bash", *(f"#SBATCH {d}" for d in directives), "", "set -euo pipefail"]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in exports.items()]
    lines += [f"cd {shlex.quote(str(workdir.resolve()))}", f"srun {shlex.join(run)}", ""]
    return "\n".join(lines)


def _job_environment(*, for_sbatch: bool) -> dict[str, str]:
    """The environment a job inherits from the process that submits it, less what belongs to that process.

    WANDB_SERVICE names the submitter's own W&B service: a job that inherited it would log through that
    service, and a requeued job would find its first attempt's never-finished W&B run "in use" there.
    For sbatch, the SLURM_* of an enclosing allocation must not leak into the new job (SLURM_CONF, which says
    where the cluster is, stays).
    """
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    if for_sbatch:
        env = {k: v for k, v in env.items() if not k.startswith("SLURM_") or k == "SLURM_CONF"}
    return env


def submit_slurm(job: Job, command: str, run_id: str, log_dir: Path, overrides: Sequence[str] = ()) -> str:
    """Record the run as queued, sbatch the script, and store the SLURM job id on the run. Returns the job id."""
    from ecaplatform.tracking.records import finish_run, upsert_run
    from ecaplatform.tracking.store import writer_engine

    if shutil.which("sbatch") is None:
        raise JobFileError("sbatch not found: `launcher: slurm` needs a SLURM client on this machine")
    log_dir.mkdir(parents=True, exist_ok=True)
    script_path = log_dir / f"{job.spec.name}-{run_id}.sbatch"
    script_path.write_text(sbatch_script(job, command, run_id, log_dir, Path.cwd(), overrides))
    script_path.chmod(0o600)  # may hold ECA_DB_URL

    engine = writer_engine()
    # Queued before sbatch: the job may start (and mark itself running) before sbatch even returns.
    upsert_run(engine, run_id, job_name=job.spec.name, claim_id=job.spec.claim, command=command,
               model_name=_model_name(job.config), status="queued", config=job.config)  # fmt: skip
    proc = subprocess.run(["sbatch", "--parsable", str(script_path)], capture_output=True, text=True,
                          env=_job_environment(for_sbatch=True))  # fmt: skip
    if proc.returncode != 0:
        finish_run(engine, run_id, "failed", error=f"sbatch failed: {proc.stderr.strip()}")
        raise JobFileError(f"sbatch {script_path} failed ({proc.returncode}): {proc.stderr.strip()}")
    slurm_id = proc.stdout.strip().split(";")[0]
    upsert_run(engine, run_id, slurm_job_id=slurm_id)
    return slurm_id


def _model_name(config: Mapping[str, Any]) -> str:
    return str(_section(config, "model").get("model_name") or "unknown")


# --- the command -------------------------------------------------------------------------------------------------


def local_command(job: Job, command: str, overrides: Sequence[str] = ()) -> list[str]:
    return [*eca_command(), command, "--config", str(job.path), *overrides]


def run_local(job: Job, command: str, run_id: str, overrides: Sequence[str] = ()) -> int:
    """`eca <command> --config JOB` in a child process, its output streaming straight through."""
    env = {**_job_environment(for_sbatch=False), "ECA_RUN_ID": run_id}
    return subprocess.run(local_command(job, command, overrides), env=env).returncode


def submit_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="eca submit", description=__doc__.split("\n\n")[0])
    parser.add_argument("job", help="job YAML: a LightningCLI config with a `job:` section")
    parser.add_argument("--command", choices=COMMANDS, help="what to run (default: the job's `command`, else fit)")
    parser.add_argument("--dry-run", action="store_true", help="check the job and print the sbatch script or command")
    parser.add_argument("--log-dir", type=Path, default=DEFAULT_SLURM_DIR, help="sbatch scripts and SLURM logs")
    parser.epilog = "Options after `--` go to `eca <command>` itself, e.g. `-- --ckpt_path best`."
    # Everything after `--` is passed through to the LightningCLI (e.g. --ckpt_path for a verification job).
    overrides: list[str] = []
    if "--" in argv:
        argv, overrides = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    args = parser.parse_args(argv)

    from ecaplatform.tracking.provenance import new_run_id

    try:
        job = load_job(args.job)
        # JobSpec may carry the command (a verification job says validate); the command line wins.
        args.command = args.command or job.spec.command
        check_job(job, overrides)
        check_config(job.path, args.command, overrides)
    except JobFileError as exc:
        print(f"eca submit: {exc}\nnothing was submitted", file=sys.stderr)
        return 2
    run_id = new_run_id()
    if job.spec.launcher == "slurm":
        if args.dry_run:
            print(sbatch_script(job, args.command, run_id, args.log_dir, Path.cwd(), overrides))
            return 0
        try:
            slurm_id = submit_slurm(job, args.command, run_id, args.log_dir, overrides)
        except JobFileError as exc:
            print(f"eca submit: {exc}", file=sys.stderr)
            return 1
        print(f"submitted SLURM job {slurm_id} as run {run_id} (queued); follow it with `eca runs --show {run_id}`")
        return 0
    if args.dry_run:
        print(f"ECA_RUN_ID={run_id} {shlex.join(local_command(job, args.command, overrides))}")
        return 0
    shown = shlex.join(["eca", *local_command(job, args.command, overrides)[len(eca_command()) :]])
    print(f"eca submit: run {run_id}: {shown}", flush=True)
    code = run_local(job, args.command, run_id, overrides)
    print(f"eca submit: run {run_id} exited with {code}; `eca runs --show {run_id}` shows what was recorded")
    return code
