"""`make mutation`: mutation testing (mutmut 3) of the modules whose mistakes would fake or lose a result, with a
killed/survived table per module.

mutmut works in a copy (mutants/, git-ignored) and never writes the sources. Its settings (files, tests, the
forkserver) are in pyproject.toml [tool.mutmut]; which functions of those files count, module by module, is here.
For each mutant mutmut runs only the selected tests that call the mutated function (it traces that first), with
pytest -x, so each module is checked by its own fast tests.

    python scripts/mutation_run.py              # fresh run of every module below, then the table
    python scripts/mutation_run.py --report     # the table of the last run (mutants/ as it is)
    python scripts/mutation_run.py --module checkpoint --module verification   # only those modules

Exit status 1 when a module kills fewer than TARGET of its mutants (timeouts count as killed: the mutant made the
tests hang, and they noticed).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTANTS = ROOT / "mutants"
TARGET = 0.90

# Module -> mutmut name globs (module path, then x_<function> or xǁ<Class>ǁ<method>). Only these functions' mutants
# are run and counted: the rest of resnet.py, mobilenetv2.py, base.py and store.py is model building, data loading
# or writing, which other tests cover.
_BASE = "ecaplatform.datamodules.base."
_STORE = "ecaplatform.store.database."
MODULES: dict[str, list[str]] = {
    "verification": ["ecaplatform.store.verification.*"],
    "exact sampler": [
        f"{_BASE}xǁExactDistributedSamplerǁ*", f"{_BASE}x_sample_order*", f"{_BASE}x_per_device_batch_size*",
        *(f"{_BASE}xǁClassificationDataModuleǁ{name}*" for name in (
            "_world", "_sampler", "_batch_size", "_loader", "val_dataloader", "test_dataloader")),
    ],  # fmt: skip
    # What decides the run's record, its status and its result (the recorder callback, the StoreLogger, the run's
    # status moves) and the per-image outcomes; not W&B's link or the heartbeat thread (a run's liveness).
    "recorder": [
        "ecaplatform.training.recorder.*", "ecaplatform.training.outcomes_metric.*",
        *(f"ecaplatform.training.store_logger.{name}*" for name in ("x__scalar", "x_finite", *(
            f"xǁStoreLoggerǁ{method}" for method in ("log_metrics", "after_save_checkpoint", "finalize", "stopped",
                                                     "_checkpoint_fields")))),
        *(f"ecaplatform.training.run.xǁRunStatusǁ{name}*" for name in ("queued", "start", "end", "requeued")),
    ],  # fmt: skip
    "eca + kernel policy": [
        "ecaplatform.models.eca.*",
        "ecaplatform.models.resnet.x_resolve_resnet_kernels*",
        "ecaplatform.models.mobilenetv2.x_resolve_mobilenet_kernels*",
        "ecaplatform.models.mobilenetv2.x_block_output_channels*",
    ],
    "checkpoint": ["ecaplatform.models.checkpoint.*"],
    # How a reader opens the store (read-only, never creating it). Not the URL parsing the writers share
    # (Store.at, Store.path): every test opens a store, so each of their mutants would run the whole selection.
    "store readers": [
        *(f"{_STORE}xǁStoreǁ{name}*" for name in ("exists", "engine", "reader", "open_reader")),
        *(f"{_STORE}x_{name}*" for name in ("_sqlite_engine", "_connect_sqlite_readonly", "schema_behind",
                                            "has_tables")),
    ],  # fmt: skip
}

# mutmut's exit codes (mutmut.stats.status_by_exit_code), grouped for the table.
KILLED, TIMEOUT, SURVIVED, NO_TESTS = "killed", "timeout", "survived", "no tests"
_STATUS = {1: KILLED, 3: KILLED, 0: SURVIVED, 5: NO_TESTS, 33: NO_TESTS, 36: TIMEOUT, 24: TIMEOUT, -24: TIMEOUT,
           152: TIMEOUT, 255: TIMEOUT, None: "not checked"}  # fmt: skip


def _results() -> dict[str, int | None]:
    """Every mutant's exit code from mutmut's per-file .meta files."""
    codes: dict[str, int | None] = {}
    for meta in MUTANTS.rglob("*.py.meta"):
        codes.update(json.loads(meta.read_text())["exit_code_by_key"])
    return codes


def _members(globs: list[str], codes: dict[str, int | None]) -> dict[str, int | None]:
    return {name: code for name, code in codes.items() if any(fnmatch.fnmatchcase(name, g) for g in globs)}


def report(modules: list[str]) -> bool:
    """Print the per-module table and the survivors; True when every module reaches TARGET."""
    codes = _results()
    ok = True
    print(f"\n| module | mutants | killed | timeout | survived | no tests | other | killed % |\n|{'---|' * 8}")
    survivors: list[str] = []
    for module in modules:
        members = _members(MODULES[module], codes)
        counts = Counter(_STATUS.get(code, "suspicious") for code in members.values())
        total = len(members)
        dead = counts[KILLED] + counts[TIMEOUT]
        other = total - dead - counts[SURVIVED] - counts[NO_TESTS]
        share = dead / total if total else 0.0
        ok &= share >= TARGET
        print(f"| {module} | {total} | {counts[KILLED]} | {counts[TIMEOUT]} | {counts[SURVIVED]} | "
              f"{counts[NO_TESTS]} | {other} | {100 * share:.1f} |")  # fmt: skip
        survivors += sorted(name for name, code in members.items()
                            if code is not None and _STATUS.get(code, "suspicious") not in (KILLED, TIMEOUT))
    if survivors:
        print(f"\nnot killed ({len(survivors)}; `mutmut show NAME` prints the change):")
        for name in survivors:
            print(f"  {name}: {_STATUS.get(codes[name], 'suspicious')}")
    return ok


def run(modules: list[str], workers: int) -> None:
    # mutmut copies a file into mutants/ only once and never refreshes it: start from a fresh copy of the tree.
    shutil.rmtree(MUTANTS, ignore_errors=True)
    globs = [g for module in modules for g in MODULES[module]]
    # One thread per worker: the workers already use every core, and torch's thread pool would oversubscribe them.
    # (A test's subprocess, e.g. `python -m ecaplatform runs` as another user, imports the sources, not the mutant:
    # mutmut's traced run cannot follow it there. What only such tests reached has in-process tests of its own.)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}
    mutmut = Path(sys.executable).with_name("mutmut")
    started = time.monotonic()
    done = subprocess.run([str(mutmut), "run", "--max-children", str(workers), *globs], cwd=ROOT, env=env,
                          check=False)  # fmt: skip
    minutes = (time.monotonic() - started) / 60
    print(f"\nmutmut run: exit status {done.returncode}, {minutes:.1f} min with {workers} workers")
    if done.returncode != 0:
        sys.exit(done.returncode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--report", action="store_true", help="only print the table of the last run")
    parser.add_argument("--module", action="append", choices=sorted(MODULES), help="only this module (repeatable)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel mutants (default: CPUs)")
    args = parser.parse_args()
    modules = args.module or list(MODULES)
    if not args.report:
        run(modules, args.workers)
    sys.exit(0 if report(modules) else 1)


if __name__ == "__main__":
    main()
