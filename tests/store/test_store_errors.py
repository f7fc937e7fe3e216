"""The store from the user's side: readers never create a store; a misconfigured, unreachable or foreign store is
one line on stderr with what to do, a non-zero exit and no traceback, the store left as it was; no password is
ever printed; a closed pipe ends `eca` quietly."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecaplatform.cli import leaderboard as leaderboard_launcher
from ecaplatform.cli.main import main as eca
from ecaplatform.store import database as store
from ecaplatform.store.database import StoreError, display_url
from tests.services import free_port

PASSWORD = "s3cret-pw"
READERS = [["runs"], ["runs", "--show", "run-1"], ["claims"], ["claims", "--json"], ["db", "url"], ["db", "current"]]
EVERY_COMMAND = [*READERS, ["db", "upgrade"]]


def run_eca(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """The real `eca` entry point in its own process (`python -m ecaplatform`)."""
    return subprocess.run([sys.executable, "-m", "ecaplatform", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)  # fmt: skip


def one_line_error(err: str, command: list[str]) -> str:
    """The error output of `eca COMMAND`: exactly one line, prefixed with the command, no traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"eca {' '.join(command)} printed {len(lines)} lines on stderr:\n{err}"
    assert lines[0].startswith(f"eca {command[0]}"), lines[0]
    assert "Traceback" not in err
    return lines[0]


# --- 1. readers never create a store ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", READERS, ids=" ".join)
def test_readers_never_create_a_store_and_say_how_one_is_made(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "typo" / "runs.db"  # a mistyped path: neither the folder nor the file exists
    monkeypatch.setenv("ECA_DB_URL", f"sqlite:///{path}")
    code = eca(command)
    out, err = capsys.readouterr()
    assert not path.exists() and not path.parent.exists(), "looking created the store"
    if command[0] == "claims":  # the claims file is still listed, every claim Unverified
        assert code == 0 and "Unverified" in out and "Verified " not in out
        if "--json" in command:
            assert err == ""
            return
        assert f"none verified: no run store at {path} (ECA_DB_URL) yet" in out.splitlines()[-1]
        return
    if command == ["db", "url"]:  # where the store is (or will be): the answer, and a note that it is not there yet
        assert code == 0 and out.strip() == f"sqlite:///{path}"
    else:
        assert code == 1 and out == ""
    line = one_line_error(err, command)
    assert f"no run store at {path} (ECA_DB_URL) yet" in line and "eca fit" in line and "eca db upgrade" in line


def test_writers_create_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "new" / "runs.db"
    monkeypatch.setenv("ECA_DB_URL", f"sqlite:///{path}")
    assert eca(["db", "upgrade"]) == 0
    assert path.is_file()
    store.writer_engine(f"sqlite:///{tmp_path / 'other' / 'runs.db'}").dispose()  # what the recorder opens
    assert (tmp_path / "other" / "runs.db").is_file()


# --- 2. one line for every store problem -------------------------------------------------------------------------


def _closed_port() -> int:
    return free_port()  # nothing listens there: connecting is refused at once


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers: what a firewalled or hung server looks like."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield int(listener.getsockname()[1])


def _text_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database\n" * 20)
    return path


PROBLEMS = {
    "not a url": (lambda tmp: "not a url", "ECA_DB_URL='not a url' is not a database URL; use sqlite:///"),
    "unsupported": (lambda tmp: "mysql://eca@127.0.0.1/eca", "the run store is SQLite or PostgreSQL, not mysql"),
    "in-memory": (lambda tmp: "sqlite://", "needs a SQLite file, not an in-memory database"),
    "unreachable": (
        lambda tmp: f"postgresql+psycopg://eca:{PASSWORD}@127.0.0.1:{_closed_port()}/eca",
        "cannot connect to the run store postgresql+psycopg://eca:***@127.0.0.1:",
    ),
    "not a database": (lambda tmp: f"sqlite:///{_text_file(tmp)}", "notes.db is not a SQLite database"),
    "a folder": (lambda tmp: f"sqlite:///{tmp}", "is a folder, not a run store file"),
}


@pytest.mark.parametrize("problem", list(PROBLEMS))
@pytest.mark.parametrize("command", EVERY_COMMAND, ids=" ".join)
def test_a_store_problem_is_one_line_and_a_non_zero_exit(
    problem: str, command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    make_url, expected = PROBLEMS[problem]
    url = make_url(tmp_path)
    monkeypatch.setenv("ECA_DB_URL", url)
    before = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    if command == ["db", "url"] and problem in ("unreachable", "not a database", "a folder"):
        assert eca(command) == 0  # only shows where the store is: nothing to connect to
        assert PASSWORD not in capsys.readouterr().out
        return
    assert eca(command) == 1
    out, err = capsys.readouterr()
    assert expected in one_line_error(err, command)
    assert PASSWORD not in out + err
    assert {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before, "the store was changed"
    assert sorted(tmp_path.iterdir()) == sorted(before), "a file was created next to the store"


def test_the_real_entry_point_prints_the_line_without_a_traceback(tmp_path: Path) -> None:
    done = run_eca("runs", env={"ECA_DB_URL": f"sqlite:///{_text_file(tmp_path)}"})
    assert done.returncode == 1 and done.stdout == ""
    assert one_line_error(done.stderr, ["runs"]).startswith(f"eca runs: {tmp_path / 'notes.db'} is not a SQLite")


def test_an_unanswering_postgresql_server_is_given_up_within_seconds(
    silent_server: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert store.POSTGRES_CONNECT_TIMEOUT_S <= 5
    monkeypatch.setattr(store, "POSTGRES_CONNECT_TIMEOUT_S", 1)  # the same code path, a shorter wait
    monkeypatch.setenv("ECA_DB_URL", f"postgresql+psycopg://eca:{PASSWORD}@127.0.0.1:{silent_server}/eca")
    started = time.monotonic()
    assert eca(["runs"]) == 1
    assert time.monotonic() - started < 4
    line = one_line_error(capsys.readouterr().err, ["runs"])
    assert "timeout" in line and PASSWORD not in line


def test_a_store_error_from_any_subcommand_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """`eca fit` and `eca submit` reach the store through the recorder: their store problems are one line too."""
    from ecaplatform.cli import main as cli

    def record(_argv: list[str]) -> int:
        try:
            store.Store.at("oracle://x@y/z")
        except StoreError as exc:
            raise ValueError("the callback failed") from exc  # as a framework might wrap it
        return 0

    monkeypatch.setattr(cli, "subcommand", lambda name: record)
    assert eca(["fit"]) == 1
    assert "not oracle" in one_line_error(capsys.readouterr().err, ["fit"])


# --- C. no password, anywhere ------------------------------------------------------------------------------------


def test_urls_are_shown_without_their_password() -> None:
    assert display_url(f"postgresql+psycopg://eca:{PASSWORD}@db.lab:5432/eca") == "postgresql+psycopg://eca:***@db.lab:5432/eca"
    assert PASSWORD not in display_url(f"postgresql://eca@db/eca?password={PASSWORD}&sslmode=require")
    assert "sslmode=require" in display_url(f"postgresql://eca@db/eca?password={PASSWORD}&sslmode=require")
    assert PASSWORD not in display_url(f"postgresql://eca:{PASSWORD}@db:notaport/eca")  # unparsable: still hidden
    assert PASSWORD not in display_url(f"postgresql://eca:a@{PASSWORD}@db/eca")  # an unquoted @ in the password
    assert display_url("sqlite:////home/me/runs.db") == "sqlite:////home/me/runs.db"
    assert PASSWORD not in str(store.Store.at(f"postgresql://eca:{PASSWORD}@db/eca").problem(
        OSError(f"FATAL: no user eca with password {PASSWORD}")))  # fmt: skip


def test_no_command_prints_the_password(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    port = _closed_port()
    url = f"postgresql+psycopg://eca:{PASSWORD}@127.0.0.1:{port}/eca"
    monkeypatch.setenv("ECA_DB_URL", url)
    printed = []
    for command in [*EVERY_COMMAND, ["leaderboard", "--dry-run"]]:
        eca(command)
        printed.append(capsys.readouterr())
    # The banner of `eca leaderboard`, without starting Streamlit.
    monkeypatch.setattr(leaderboard_launcher.os, "execv", lambda *args: None)
    assert leaderboard_launcher.main(["--db-url", url]) == 0
    printed.append(capsys.readouterr())
    assert "postgresql+psycopg://eca:***@127.0.0.1" in printed[-1].out
    assert "eca:***@" in printed[EVERY_COMMAND.index(["db", "url"])].out
    assert all(PASSWORD not in p.out + p.err for p in printed), [p for p in printed if PASSWORD in p.out + p.err]
    done = run_eca("db", "url", env={"ECA_DB_URL": url})
    assert done.stdout.strip() == f"postgresql+psycopg://eca:***@127.0.0.1:{port}/eca"


def with_password(url: str) -> str:
    """The test server's URL with a password in it (the server trusts 127.0.0.1 and ignores it)."""
    return url.replace("postgres@", f"postgres:{PASSWORD}@", 1)


@pytest.mark.postgres
def test_no_command_prints_the_password_of_a_real_postgresql_store(
    fresh_postgres_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ECA_DB_URL", with_password(fresh_postgres_url))
    shown = fresh_postgres_url.replace("postgres@", "postgres:***@", 1)
    for command in [["db", "upgrade"], ["db", "url"], ["db", "current"], ["claims"], ["runs"]]:
        assert eca(command) == 0, command
        printed = capsys.readouterr()
        assert PASSWORD not in printed.out + printed.err, command
        if command != ["runs"]:
            assert shown in printed.out, command
    assert eca(["runs", "--show", "nope"]) == 1
    assert PASSWORD not in capsys.readouterr().err


# --- 4. a closed pipe ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["models"], ["claims"], ["runs"]], ids=" ".join)
def test_a_closed_pipe_ends_eca_quietly(command: list[str], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    store.writer_engine(url).dispose()
    read_end, write_end = os.pipe()
    os.close(read_end)  # `eca ... | head -1` after head has gone
    try:
        done = subprocess.run([sys.executable, "-m", "ecaplatform", *command], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=120,
                              env={**os.environ, "ECA_DB_URL": url})  # fmt: skip
    finally:
        os.close(write_end)
    assert done.stderr == ""
    assert done.returncode == 141  # 128 + SIGPIPE, as a shell reports for `yes | head -1`
