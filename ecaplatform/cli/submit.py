"""`eca submit JOB.yaml`: check a job file, then run it locally or submit it to SLURM.

A job YAML is a LightningCLI config plus a `job:` section (ecaplatform.training.jobspec.JobSpec). Before anything runs
or is submitted, the job is parsed in this process by the same LightningCLI that `eca fit` uses and its model and
data module are built (lightning_cli.check_job), so `eca submit` rejects exactly what `eca fit` would reject
before training, with the same one-line errors. Then the one check only a submission needs: that SLURM's task
count matches `trainer.devices` (Lightning only detects a SLURM job when they agree). A SLURM job's data may sit on
its nodes' disks: where this machine cannot read it, the checks that need it run on the node as the job's first step
(`eca submit --node-check`), which records the run failed, in one line of the job's log, if they fail there.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_type_hints

import yaml

from ecaplatform.training.jobspec import COMMANDS, JobSpec, Resources, UnsafeIdentifierError

DEFAULT_SLURM_DIR = Path("runs") / "slurm"
LAUNCHERS: tuple[str, ...] = get_args(get_type_hints(JobSpec)["launcher"])  # what `eca submit --launcher` takes


class JobFileError(ValueError):
    """A job file that must not be submitted; the message names the file and the field."""


@dataclass
class Job:
    path: Path
    spec: JobSpec
    config: dict[str, Any]  # the resolved config, as `eca <command> --config JOB --print_config` shows it
    data_unseen: str | None = None  # why the data could not be read here: a SLURM job then checks it on its node


# --- reading and checking a job file -----------------------------------------------------------------------------


def job_setting(path: Path, key: str, default: str) -> str:
    """`job.<key>` as the job file says it (through its `extends:` chain), before the full parse checks it."""
    from ecaplatform.training.lightning_cli import CLIConfigError, config_chain

    try:
        documents = [yaml.safe_load(file.read_text()) for file in config_chain(path)]
    except CLIConfigError as err:
        raise JobFileError(str(err)) from err
    values = [d["job"].get(key) for d in documents if isinstance(d, dict) and isinstance(d.get("job"), dict)]
    return next((v for v in reversed(values) if isinstance(v, str)), default)


def job_command(path: Path) -> str:
    """What the job says to run (`job.command`), before the full parse checks it."""
    return job_setting(path, "command", "fit")


def load_job(path: str | os.PathLike[str], command: str | None = None, overrides: Sequence[str] = (),
             data_here: bool = True) -> Job:  # fmt: skip
    """Parse the job for `command` (default: the job's own) and build its model and data, as `eca fit` would;
    with `data_here` False, data this machine cannot read is no error here (`Job.data_unseen` says why)."""
    from ecaplatform.training.lightning_cli import USER_ERRORS, CLIConfigError, check_job, user_message

    path = Path(path)
    if not path.is_file():
        raise JobFileError(f"{path}: no such job file")
    try:
        spec, config, data_unseen = check_job(path, command or job_command(path), overrides, data_here)
    except (*USER_ERRORS, CLIConfigError) as err:
        raise JobFileError(f"{path}: {user_message(err)}") from err
    if data_unseen and spec.launcher != "slurm":  # a job run here needs its data here
        raise JobFileError(f"{path}: {data_unseen}")
    return Job(path, spec, config, data_unseen)


def check_submission(job: Job) -> None:
    """What the parse leaves to a submission: a local job's accelerator (a GPU recipe on a machine without one is
    refused before anything is recorded); a SLURM job's task count against trainer.devices."""
    if job.spec.launcher == "local":
        from ecaplatform.training.lightning_cli import accelerator_problem

        problem = accelerator_problem(job.config)
        if problem:
            raise JobFileError(f"{job.path}: {problem}")
    if job.spec.launcher == "slurm":
        trainer = job.config["trainer"]
        devices, tasks = trainer.get("devices"), tasks_per_node(job.spec.resources)
        numeric = isinstance(devices, int) or (isinstance(devices, str) and devices.isdigit())
        if numeric and int(devices) != tasks:
            field = "gpus_per_node" if job.spec.resources.gpus_per_node else "tasks_per_node"
            raise JobFileError(
                f"{job.path}: trainer.devices is {devices} but SLURM would start {tasks} task(s) per node "
                f"(job.resources.{field}); make them equal so Lightning runs one process per task"
            )
        num_nodes = trainer.get("num_nodes") or 1
        if int(num_nodes) != job.spec.resources.nodes:
            raise JobFileError(
                f"{job.path}: trainer.num_nodes is {num_nodes} but job.resources.nodes is {job.spec.resources.nodes}"
            )


def eca_command() -> list[str]:
    """How to run `eca` with this very interpreter (the job must use the same environment)."""
    return [sys.executable, "-m", "ecaplatform"]


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
    for name in ("WANDB_MODE", "WANDB_DIR", "XDG_DATA_HOME"):
        if os.environ.get(name):
            exports[name] = os.environ[name]
    run = [*eca_command(), command, "--config", str(job.path.resolve()), *overrides]
    lines = ["#!/bin/bash", *(f"#SBATCH {d}" for d in directives), "", "set -euo pipefail"]
    lines.append(f"# run store: {shown_store_url()}; ECA_DB_URL (and its password) reach the job through the "
                 "environment sbatch passes on, never this file")  # fmt: skip
    lines += [f"export {name}={shlex.quote(value)}" for name, value in exports.items()]
    lines.append(f"cd {shlex.quote(str(workdir.resolve()))}")
    if job.data_unseen:  # one process on the first node, before srun starts every rank
        lines.append("# The data was not readable where the job was submitted: checked here first (a failure is one "
                     "line in this log and the run recorded failed)")  # fmt: skip
        check = [*eca_command(), "submit", "--node-check", "--command", command, str(job.path.resolve())]
        lines.append(shlex.join([*check, *(["--", *overrides] if overrides else [])]))
    lines += [f"srun {shlex.join(run)}", ""]
    return "\n".join(lines)


def shown_store_url() -> str:
    """The store's URL as it may be printed or written down: any password replaced by ***."""
    from ecaplatform.store.database import db_url, display_url

    return display_url(db_url())


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


def run_fields(job: Job, command: str) -> dict[str, Any]:
    """What `eca submit` records of a run before (or without) its process: job, claim, command, model, config."""
    return {"job_name": job.spec.name, "claim_id": job.spec.claim, "command": command,
            "model_name": job.config["model"]["model_name"], "config": job.config}  # fmt: skip


def submit_slurm(job: Job, command: str, run_id: str, log_dir: Path, overrides: Sequence[str] = ()) -> str:
    """Record the run as queued, sbatch the script, and store the SLURM job id on the run. Returns the job id."""
    from ecaplatform.training.run import RunStatus

    if shutil.which("sbatch") is None:
        raise JobFileError("sbatch not found: `launcher: slurm` needs a SLURM client on this machine")
    log_dir.mkdir(parents=True, exist_ok=True)
    script_path = log_dir / f"{job.spec.name}-{run_id}.sbatch"
    script_path.write_text(sbatch_script(job, command, run_id, log_dir, Path.cwd(), overrides))
    script_path.chmod(0o600)

    # Queued before sbatch: the job may start (and mark itself running) before sbatch even returns.
    run = RunStatus(run_id)
    run.queued(**run_fields(job, command))
    # The store's URL goes through the job's environment, never the script: --export=ALL (also where a site
    # defaults to less) hands the job this environment, and SLURM keeps it for a requeued job. It is then
    # readable only by the user's own processes and SLURM's administrators.
    proc = subprocess.run(["sbatch", "--parsable", "--export=ALL", str(script_path)], capture_output=True,
                          text=True, env=_job_environment(for_sbatch=True))  # fmt: skip
    if proc.returncode != 0:
        run.end("failed", error=f"sbatch failed: {proc.stderr.strip()}")
        raise JobFileError(f"sbatch {script_path} failed ({proc.returncode}): {proc.stderr.strip()}")
    slurm_id = proc.stdout.strip().split(";")[0]
    run.slurm_job(slurm_id)
    return slurm_id


# --- the command -------------------------------------------------------------------------------------------------


def local_command(job: Job, command: str, overrides: Sequence[str] = ()) -> list[str]:
    return [*eca_command(), command, "--config", str(job.path), *overrides]


# SIGHUP (the terminal went away) becomes SIGTERM: Lightning stops on that gracefully and records the run.
FORWARDED_SIGNALS = {signal.SIGTERM: signal.SIGTERM, signal.SIGINT: signal.SIGINT, signal.SIGHUP: signal.SIGTERM}
# Lightning stops at the first KeyboardInterrupt, but one can be lost (Python drops an exception raised inside a
# finalizer or __del__): a child still running this many seconds after SIGINT gets SIGTERM, which Lightning checks
# at every batch.
SIGINT_GRACE_S = 20.0


def run_local(job: Job, command: str, run_id: str, overrides: Sequence[str] = ()) -> int:
    """`eca <command> --config JOB` in a child process, its output streaming straight through. SIGTERM, SIGINT
    and SIGHUP sent to `eca submit` are passed on to the child; a child that dies without recording its run's
    end (kill -9, the OOM killer, a signal before training started) has it recorded here. Returns the child's
    exit code, 128 + N for a child killed by (or stopped after) signal N, as a shell reports it."""
    env = {**_job_environment(for_sbatch=False), "ECA_RUN_ID": run_id}
    # A session of its own: a ^C in the terminal then reaches the child once, through us, not twice (Lightning
    # stops gracefully on the first signal, not on a second one in the middle of that).
    child = subprocess.Popen(local_command(job, command, overrides), env=env, start_new_session=True)
    forwarded: list[int] = []

    def escalate() -> None:
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)

    def forward(signum: int, frame: object) -> None:
        forwarded.append(FORWARDED_SIGNALS[signal.Signals(signum)])
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(forwarded[-1])
        if forwarded[-1] == signal.SIGINT:
            timer = threading.Timer(SIGINT_GRACE_S, escalate)
            timer.daemon = True
            timer.start()

    previous = {}
    if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
        previous = {signum: signal.signal(signum, forward) for signum in FORWARDED_SIGNALS}
    try:
        code = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    record_child_end(run_id, code, forwarded, unrecorded=run_fields(job, command))
    if code == 0 and forwarded:  # stopped, not finished: say so as a shell would (Lightning may exit 0 on SIGTERM)
        return 128 + forwarded[0]
    return code if code >= 0 else 128 - code


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def record_child_end(run_id: str, code: int, forwarded: Sequence[int] = (), unrecorded: dict[str, Any] | None = None
                     ) -> str | None:  # fmt: skip
    """If the run is still queued or running after its process exited, end it with what the exit code says
    (failed, or interrupted when we passed a signal on); a process that failed or was stopped before it recorded
    its run at all leaves one recorded from `unrecorded` (job, model, config). Returns the error written, None if
    nothing was."""
    from ecaplatform.training.run import RunStatus

    if code < 0:
        ended = f"killed by {signal_name(-code)} (signal {-code})"
        hint = "; out of memory? the kernel's OOM killer sends SIGKILL (see `dmesg`), as does kill -9"
        hint = hint if -code == signal.SIGKILL and not forwarded else ""
    else:
        ended, hint = f"exited with code {code}", ""
    if forwarded:
        hint += f" (after eca submit passed on {', '.join(signal_name(s) for s in forwarded)})"
    status = "interrupted" if forwarded else "failed"
    run = RunStatus(run_id)
    try:
        error = f"eca submit: {ended} before it could record its end{hint}"
        if run.end_unfinished(status, error):
            return error
        if unrecorded is None or not (code or forwarded) or run.recorded():
            return None
        # e.g. an accelerator this machine lacks: the child's own one-line error is in its output above
        error = f"eca submit: {ended} before it recorded the run{hint}"
        run.ended_unrecorded(status, error, **unrecorded)
    except Exception as exc:
        print(f"eca submit: could not record how run {run_id} ended: {exc}", file=sys.stderr)
        return None
    return error


def node_check(path: str, command: str | None, overrides: Sequence[str]) -> int:
    """The first step of a SLURM job whose data `eca submit` could not read: the whole check, here on the node. A
    failure is one line in the job's log, and ends the run (ECA_RUN_ID) failed before srun starts anything."""
    import ecaplatform.training.lightning_cli  # noqa: F401 (imports Lightning, which sets its loggers' levels)
    from ecaplatform.training.run import RUN_ID_ENV_VAR, RunStatus

    host = socket.gethostname()
    # Lightning's INFO lines (the seed set) belong to the run: this step's output is one line, on failure only.
    lightning = [logging.getLogger(name) for name in ("lightning.fabric", "lightning.pytorch")]
    levels = [logger.level for logger in lightning]
    for logger in lightning:
        logger.setLevel(logging.WARNING)
    try:
        load_job(path, command, overrides)
        return 0
    except (JobFileError, UnsafeIdentifierError) as exc:
        error = f"on {host}: {exc}"
    finally:
        for logger, level in zip(lightning, levels, strict=True):
            logger.setLevel(level)
    run_id = os.environ.get(RUN_ID_ENV_VAR)
    try:
        recorded = bool(run_id) and RunStatus(run_id).end_unfinished("failed", f"eca submit --node-check: {error}")
        outcome = f"run {run_id} recorded failed" if recorded else "no queued run to record it on"
    except Exception as exc:  # the store: say so on the same line
        outcome = f"run {run_id} not recorded failed ({exc})"
    print(f"eca submit --node-check: {error}; {outcome}", file=sys.stderr)
    return 1


def submit_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="eca submit", description=__doc__.split("\n\n")[0])
    parser.add_argument("job", help="job YAML: a LightningCLI config with a `job:` section")
    parser.add_argument("--command", choices=COMMANDS, help="what to run (default: the job's `command`, else fit)")
    parser.add_argument("--dry-run", action="store_true", help="check the job and print the sbatch script or command")
    parser.add_argument("--log-dir", type=Path, default=DEFAULT_SLURM_DIR, help="sbatch scripts and SLURM logs")
    parser.add_argument("--launcher", choices=LAUNCHERS,
                        help="where to run, whatever the job's `job.launcher` says (e.g. a SLURM recipe's smoke "
                        "test here: --launcher local -- --trainer.fast_dev_run=true); the run records it")  # fmt: skip
    parser.add_argument("--node-check", action="store_true",
                        help="(the first step of a SLURM job whose data was not readable where it was "
                        "submitted) the checks that need the data; a failure records the run failed")  # fmt: skip
    parser.epilog = "Options after `--` go to `eca <command>` itself, e.g. `-- --ckpt_path best`."
    # Everything after `--` is passed through to the LightningCLI (e.g. --ckpt_path for a verification job).
    overrides: list[str] = []
    if "--" in argv:
        argv, overrides = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    args = parser.parse_args(argv)
    if args.launcher:
        # Passed on as a config override, after the user's, so that the parse, the child's command line and the
        # config the run records all say where it really ran.
        overrides = [*overrides, "--job.launcher", args.launcher]

    if args.node_check:
        return node_check(args.job, args.command, overrides)
    from ecaplatform.training.run import new_run_id, resumed_run_id

    try:
        job = load_job(args.job, args.command, overrides, data_here=False)  # a SLURM job's data may be on its nodes
        if job.data_unseen:
            print(f"eca submit: {job.path}: {job.data_unseen}: not here, so it is checked on the node, as the job's "
                  "first step (a failure there records the run failed)", file=sys.stderr)  # fmt: skip
        if args.launcher and (said := job_setting(job.path, "launcher", "local")) != args.launcher:
            print(f"eca submit: --launcher {args.launcher}: job.launcher is {args.launcher} for this run "
                  f"({job.path} says {said})", file=sys.stderr)  # fmt: skip
        check_submission(job)
        args.command = args.command or job.spec.command  # a verification job says validate; --command wins
        # A resumed fit continues its run (`--ckpt_path FILE|last|best`, made a file by the check): the child's
        # ECA_RUN_ID must be that run's, not a new one.
        resumed = resumed_run_id(args.command, job.config.get("ckpt_path"))
    except (JobFileError, UnsafeIdentifierError) as exc:
        print(f"eca submit: {exc}; nothing was submitted", file=sys.stderr)
        return 2
    run_id = resumed or new_run_id()
    if resumed:
        print(f"eca submit: continuing run {run_id} from {job.config['ckpt_path']}", flush=True)
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
    from ecaplatform.training.run import RunStatus

    code = run_local(job, args.command, run_id, overrides)
    recorded = f"`eca runs --show {run_id}` shows what was recorded" if RunStatus(run_id).recorded() else \
        "nothing was recorded"  # fmt: skip
    print(f"eca submit: run {run_id} exited with {code}; {recorded}")
    return code
