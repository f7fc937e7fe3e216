"""Real services for tests, started by the tests themselves: a throwaway PostgreSQL server, a single-node SLURM and
headless Chromium. A pytest plugin (tests/conftest.py loads it), so every test can ask for its fixtures by name."""

from __future__ import annotations

import contextlib
import glob
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

POSTGRES_BIN_GLOB = "/usr/lib/postgresql/*/bin"


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 120, poll: float = 0.2,
             diagnostics: Callable[[], str] = lambda: "") -> Any:  # fmt: skip
    """predicate()'s first truthy value, polled until `timeout`; else fail naming `what` (and the diagnostics)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    pytest.fail(f"{what}: not within {timeout}s\n{diagnostics()}".rstrip())


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def postgres_bin_dir() -> Path | None:
    """The newest installed PostgreSQL server's bin directory, or None when none is installed."""
    candidates = sorted(glob.glob(POSTGRES_BIN_GLOB), key=lambda p: int(Path(p).parent.name))
    for candidate in reversed(candidates):
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    found = shutil.which("pg_ctl")
    return Path(found).parent if found and shutil.which("initdb") else None


def _as_postgres_user(cmd: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; in a root container run its tools as the `postgres` system user.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


class PostgresServer:
    """A PostgreSQL cluster in a temporary directory, listening on 127.0.0.1:port with trust auth."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="eca-pg-"))
        self.data_dir = self.root / "data"
        self.log_file = self.root / "server.log"
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.root, user="postgres", group="postgres")
        self.root.chmod(0o700)

    def _run(self, *args: str, timeout: float = 120) -> None:
        cmd = _as_postgres_user([str(self.bin_dir / args[0]), *args[1:]])
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            log = self.log_file.read_text() if self.log_file.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n{log}")

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off"
        log = str(self.log_file)
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", log, "-o", options, "-w", "-t", "60", "start")

    def create_database(self, name: str) -> str:
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        try:
            if (self.data_dir / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "-t", "30", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole session; stopped and deleted at the end, also after failures."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries are not installed (run scripts/install_system_deps.sh)")
    server = PostgresServer(bin_dir)
    try:
        started = time.monotonic()
        server.start()
        print(f"PostgreSQL started on 127.0.0.1:{server.port} in {time.monotonic() - started:.1f}s")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """`postgresql+psycopg://postgres@127.0.0.1:PORT/DB`: an empty database on a real server, for the session."""
    return postgres_server.create_database("eca_session")


@pytest.fixture
def fresh_postgres_url(postgres_server: PostgresServer) -> str:
    """An empty database of its own for one test (same server)."""
    return postgres_server.create_database(f"eca_{uuid.uuid4().hex[:12]}")


# --- a single-node SLURM cluster ------------------------------------------------------------------------------

SLURM_CONF_TEMPLATE = """\
ClusterName=ecatest
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
# cred_expire also holds a requeued job back before it may start again (default 120 s): keep the test short.
AuthInfo=socket={root}/munge.sock,cred_expire=10
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
# No cgroups in a container: track processes by parent id, bind no tasks.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
# Lightning ignores SIGTERM under SLURM (it waits to be requeued): SIGKILL soon after, not the default 30 s.
KillWait=5
# Lightning derives the DDP port from the job id: a random first id keeps two clusters' jobs off the same port.
FirstJobId={first_job_id}
NodeName={host} CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
"""


class SlurmCluster:
    """munged + slurmctld + slurmd in the foreground, all state in one temporary directory."""

    def __init__(self, cpus: int = 2, mem_mb: int = 8000) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="eca-slurm-"))
        self.host = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.processes: list[subprocess.Popen] = []
        (self.root / "state").mkdir()
        (self.root / "spool").mkdir()
        self.conf.write_text(
            SLURM_CONF_TEMPLATE.format(
                host=self.host, root=self.root, ctld_port=free_port(), slurmd_port=free_port(), cpus=cpus,
                mem_mb=mem_mb, first_job_id=random.randint(1000, 9000) * 10,
            )
        )
        # Our own munge key: never touch /etc/munge, and work where the package created none.
        self.munge_key = self.root / "munge.key"
        self.munge_key.write_bytes(os.urandom(1024))
        self.munge_key.chmod(0o400)

    @property
    def env(self) -> dict[str, str]:
        """The environment for sbatch/squeue: this cluster's config, nothing of an enclosing SLURM job."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
        env["SLURM_CONF"] = str(self.conf)
        return env

    def _spawn(self, name: str, *args: str) -> None:
        log = open(self.root / f"{name}.out", "w")  # noqa: SIM115 (closed when the process ends)
        self.processes.append(subprocess.Popen([name, *args], stdout=log, stderr=subprocess.STDOUT, env=self.env))

    def start(self, timeout: float = 60) -> None:
        root = str(self.root)
        self._spawn("munged", "-F", "-f", f"--socket={root}/munge.sock", f"--key-file={self.munge_key}",
                    f"--pid-file={root}/munged.pid", f"--log-file={root}/munged.log", f"--seed-file={root}/munged.seed")
        deadline = time.monotonic() + timeout
        while not (self.root / "munge.sock").exists():
            self._check_alive(deadline)
        self._spawn("slurmctld", "-D", "-i", "-f", str(self.conf))
        self._spawn("slurmd", "-D", "-f", str(self.conf))
        while True:
            self._check_alive(deadline)
            state = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=self.env)
            if state.stdout.strip() == "idle":
                return

    def _check_alive(self, deadline: float) -> None:
        time.sleep(0.3)
        dead = [p.args[0] for p in self.processes if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            logs = "\n".join(f"== {f.name}\n{f.read_text()[-2000:]}" for f in sorted(self.root.glob("*.out")))
            raise RuntimeError(f"SLURM did not start ({'exited: ' + ', '.join(dead) if dead else 'timeout'}):\n{logs}")

    def log(self, name: str) -> str:
        path = self.root / name
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["scancel", "--full", "--user", str(os.getuid())], env=self.env, capture_output=True,
                           timeout=30)  # fmt: skip
            # Let slurmd kill the jobs' processes before it goes: none may outlive the cluster.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                queue = subprocess.run(["squeue", "-h"], env=self.env, capture_output=True, text=True, timeout=30)
                if queue.returncode != 0 or not queue.stdout.strip():
                    break
                time.sleep(1)
        for process in reversed(self.processes):  # slurmd, slurmctld, then munged
            stop_process(process)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A real single-node SLURM (2 CPUs) with its own munged, for the session; stopped and deleted at the end."""
    missing = [name for name in ("munged", "slurmctld", "slurmd", "sbatch", "srun") if shutil.which(name) is None]
    if missing:
        pytest.skip(f"SLURM is not installed ({', '.join(missing)} missing; run scripts/install_system_deps.sh)")
    if os.geteuid() != 0:
        pytest.skip("starting slurmd needs root (it launches jobs as their user)")
    cluster = SlurmCluster(cpus=max(2, os.cpu_count() or 2))
    try:
        started = time.monotonic()
        cluster.start()
        print(f"SLURM started in {time.monotonic() - started:.1f}s ({cluster.conf})")
        yield cluster
    finally:
        cluster.stop()


# ---------------------------------------------------------------------------------------------- headless Chromium

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


@contextlib.contextmanager
def chromium_page(width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A Playwright page in the Debian `chromium` (skips the test where it or Playwright is not installed)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed (run scripts/install_system_deps.sh)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


@pytest.fixture
def browser_page() -> Iterator[Any]:
    """A page in headless Chromium, 1400x1000."""
    with chromium_page() as page:
        yield page
