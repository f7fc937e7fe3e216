"""A pytest plugin for `make mutation` only (pyproject.toml [tool.mutmut] pytest_add_cli_args loads it).

mutmut runs each mutant's tests with -x: the first failing test kills it. Running the fast, targeted tests first
(the edge and property tests beside each subject) makes most kills take a fraction of a second instead of waiting for
a Lightning fit that happens to come first; a survivor still runs every test.

mutmut's fork server handles SIGTERM by exiting with status 0, and the processes it forks to test each mutant
inherit that handler. Lightning chains to a handler it finds, so a test that sends itself SIGTERM (a SLURM
preemption, tests/training/test_recorder.py) would end the whole test process with status 0: the tests still to
run would be skipped and the mutant counted as survived. The default action restores what a plain pytest process has.
"""

from __future__ import annotations

import signal

import pytest

# The targeted files: the edge tests written against mutants, the property tests, the verification rule's own.
FIRST = ("test_verification", "test_readonly_edges.py", "test_kernel_and_checkpoint_edges.py", "test_exact_sampler.py",
         "test_recorder_hooks.py")


def pytest_configure(config: pytest.Config) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def targeted(item: pytest.Item) -> bool:
        return item.path.name.startswith(FIRST) or item.path.name.endswith("_properties.py")

    items.sort(key=lambda item: not targeted(item))  # stable: file order kept within each group
