"""`eca claims`, `eca runs` and `eca db`: the store from the command line (no torch import).

`eca claims`, `eca runs` and `eca db url|current` only read: they open the store read-only and never create it.
`eca db upgrade` and `eca db copy` (into an empty target) are the writers here. A store problem (bad URL, server
down, not a database, no access) is one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sqlalchemy import Engine, ScalarSelect, select
from sqlalchemy.orm import Session, aliased

from ecaplatform.cli.text_table import text_table
from ecaplatform.store.board import STORE_MISSING, read_board
from ecaplatform.store.claims import ClaimsFileError, ensure_claims
from ecaplatform.store.database import (
    Store,
    StoreError,
    current_revision,
    has_tables,
    head_revision,
    session_scope,
    upgrade,
)
from ecaplatform.store.schema import EpochMetric, Result, Run
from ecaplatform.store.slurm_states import ASKED_STATUSES, SHOWN_SLURM_STATUSES, shown_status, slurm_ended
from ecaplatform.store.spread import spread_label
from ecaplatform.store.verification import SHOWN_RUN_STATUSES, run_status, run_status_expression


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def claims_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="eca claims", description="The paper's claims, their status and evidence.")
    parser.add_argument("--public", action="store_true", help="only the claims the public leaderboard page lists")
    parser.add_argument("--model", help="only claims about this registry model, e.g. eca_resnet50")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)

    try:
        store = Store.from_env()
        board = read_board(store, public=args.public, model=args.model)
    except (StoreError, ClaimsFileError) as exc:
        print(f"eca claims: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([row.record() for row in board.rows], indent=2))
        return 0
    rows = []
    for s in board.rows:
        measured, evidence = _pct(s.verified_value), s.evidence_run_id
        if s.evidence is not None and s.evidence.spread is not None:
            measured += f" ({spread_label(s.evidence.spread)})"
        if s.verified_value is None and s.best_other_value is not None:
            # Shown, never verifying: say why next to the number.
            measured = f"({_pct(s.best_other_value)})"
            evidence = f"{s.best_other_run_id}: {s.best_other_reason}"
        rows.append(
            [s.claim.label, s.claim.dataset, s.claim.metric, _pct(s.claim.claimed), measured, s.status, evidence]
        )
    print(text_table(["Claim", "Dataset", "Metric", "Claimed", "Measured", "Status", "Evidence"], rows))
    if any(s.evidence is not None for s in board.rows):
        print("\nMeasured: the best qualifying value; in brackets n, mean ± sample std of the qualifying results of "
              "the fit runs with its recipe (its config without seeds, paths and logging).")  # fmt: skip
    if board.state == STORE_MISSING:
        print(f"\n{len(board.rows)} claims, none verified: {store.missing_message()}")
    else:
        print(f"\n{len(board.rows)} claims; store: {store.display_url}")
    return 0


def runs_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="eca runs", description="Recorded runs, newest first.")
    parser.add_argument("--status", choices=(*SHOWN_RUN_STATUSES, *SHOWN_SLURM_STATUSES),
                        help="only runs with this status (lost: running, but its process stopped reporting; "
                        "cancelled, timed out: as SLURM says of the run's job)")
    parser.add_argument("--model", help="only runs of this registry model")
    parser.add_argument("--limit", type=int, default=20, help="at most this many runs (default 20)")
    parser.add_argument("--show", metavar="RUN_ID", help="everything recorded about one run, as JSON")
    args = parser.parse_args(argv)

    try:
        engine = Store.from_env().open_reader()
        try:
            rows = _runs(engine, args)
        finally:
            engine.dispose()
    except StoreError as exc:
        print(f"eca runs: {exc}", file=sys.stderr)
        return 1
    if rows is None:
        print(f"eca runs: no run with id {args.show!r}; `eca runs` lists the ids", file=sys.stderr)
        return 1
    if args.show:
        return 0
    headers = ["Run", "Job", "Command", "Model", "Data", "Status", "Best top-1", "SLURM", "Created (UTC)"]
    print(text_table(headers, rows))
    return 0


def _runs(engine: Engine, args: argparse.Namespace) -> list[list[Any]] | None:
    """The listing's rows, or for --show print the run and return [] (None: no such run)."""
    if not has_tables(engine):  # a database nobody has migrated yet: no runs (an older schema: SchemaBehind)
        return None if args.show else []
    with session_scope(engine) as session:
        if args.show:
            run = session.get(Run, args.show)
            if run is None:
                return None
            print(json.dumps(run_details(session, run), indent=2, default=str))
            return []
        shown = run_status_expression()
        newest = Result.id == _newest_top1_result()
        query = select(Run, shown, Result).outerjoin(Result, newest).order_by(Run.created_at.desc(), Run.id)
        if args.status:  # a queued or running run shows otherwise where SLURM says its job ended: filtered below
            query = query.where((shown == args.status) | Run.status.in_(ASKED_STATUSES))
        else:
            query = query.limit(args.limit)
        if args.model:
            query = query.where(Run.model_name == args.model)
        found = list(session.execute(query))
        ended = slurm_ended((run.id, run.slurm_job_id) for run, _, _ in found if run.status in ASKED_STATUSES)
        rows = []
        for run, status, result in found:
            end = ended.get(run.id)
            status = shown_status(status, end)
            if args.status and status != args.status:
                continue
            rows.append([
                run.id, run.job_name, run.command, run.model_name, run.dataset_name, status,
                _pct(_shown_top1(run, result.metric_values.get("top1") if result else None)),
                f"{run.slurm_job_id} ({end.state})" if end else run.slurm_job_id,
                f"{run.created_at:%Y-%m-%d %H:%M}" if run.created_at else "",
            ])  # fmt: skip
        return rows[: args.limit]


def _newest_top1_result() -> ScalarSelect[int | None]:
    """The id of the run's newest result that has a top-1 (a correlated subquery: one query for the listing); its
    value is read through Result.metric_values, exact from its counts."""
    result = aliased(Result)  # the listing joins Result itself: this one must not correlate to it
    newest = select(result.id).where(result.run_id == Run.id, result.top1.is_not(None)).correlate(Run)
    return newest.order_by(result.id.desc()).limit(1).scalar_subquery()


def _shown_top1(run: Run, result_top1: float | None) -> float | None:
    """A fit run's best val top-1 over its epochs; a validate or test run logs no epochs, so Run.best_top1 stays
    empty and its result's top-1 is the number. Either falls back on the other when it has only that one."""
    if run.command == "fit":
        return run.best_top1 if run.best_top1 is not None else result_top1
    return result_top1 if result_top1 is not None else run.best_top1


def run_details(session: Session, run: Run) -> dict[str, Any]:
    """One run with its provenance, per-epoch metrics and results, as plain data."""
    details = {column.name: getattr(run, column.name) for column in Run.__table__.columns}
    details["status"] = run_status(run.status, run.heartbeat_at, run.started_at)  # `lost` when it stopped beating
    if run.status in ASKED_STATUSES and (end := slurm_ended([(run.id, run.slurm_job_id)]).get(run.id)):
        details["status"] = shown_status(details["status"], end)  # e.g. cancelled: SLURM ended its job
        details["slurm_state"] = {"state": end.state, "exit_code": end.exit_code, "ended_at": end.ended_at}
    metrics = session.scalars(select(EpochMetric).where(EpochMetric.run_id == run.id).order_by(EpochMetric.epoch))
    details["metrics"] = [{"epoch": m.epoch, "step": m.step, "name": m.name, "value": m.value} for m in metrics]
    results = session.scalars(select(Result).where(Result.run_id == run.id).order_by(Result.id))
    details["results"] = [  # `metrics` as every reader sees them: a proportion's exactly from its counts
        {column.name: getattr(r, column.name) for column in Result.__table__.columns if column.name != "run_id"}
        | {"metrics": r.metric_values} for r in results
    ]
    return details


def db_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="eca db", description="The run store (ECA_DB_URL, else a per-user SQLite).")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("upgrade", help="create the store or migrate it to the newest schema (also done automatically)")
    sub.add_parser("url", help="print the store's URL")
    sub.add_parser("current", help="print the schema revision the store is at, and the newest one")
    copy = sub.add_parser("copy", help="copy a whole store into a new, empty one (e.g. SQLite -> PostgreSQL), ids "
                                       "kept, each table verified by row count and checksum")  # fmt: skip
    copy.add_argument("source", metavar="SRC_URL", help="the store to copy (read only)")
    copy.add_argument("target", metavar="DST_URL", help="an empty database; migrated to the newest schema first")
    args = parser.parse_args(argv)

    try:
        return _copy(args.source, args.target) if args.action == "copy" else _db(args.action)
    except StoreError as exc:
        print(f"eca db {args.action}: {exc}", file=sys.stderr)
        return 1


def _db(action: str) -> int:
    store = Store.from_env()
    if action == "url":
        print(store.display_url)
        if not store.exists():
            print(f"eca db url: {store.missing_message()}", file=sys.stderr)
        return 0
    if action == "current":
        engine = store.open_reader()
        revision = current_revision(engine)
        engine.dispose()
        print(f"store {store.display_url}: at {revision or 'no revision (never migrated)'}, newest {head_revision()}")
        return 0
    engine = store.engine()
    before = current_revision(engine)
    after = upgrade(engine)
    ensure_claims(engine)
    engine.dispose()
    change = "already at" if before == after else f"upgraded from {before or 'empty'} to"
    print(f"store {store.display_url}: {change} {after}")
    return 0


def _copy(source_url: str, target_url: str) -> int:
    from ecaplatform.store.copy import copy_store

    source, target = Store.at(source_url), Store.at(target_url)
    copied = copy_store(source, target)
    rows = [[table.name, table.rows, table.checksum[:16]] for table in copied]
    print(text_table(["Table", "Rows", "SHA-256 (both stores)"], rows, right=[1]))
    print(f"copied {sum(t.rows for t in copied)} rows of {len(copied)} tables from {source.display_url} to "
          f"{target.display_url}; every table's row count and checksum match")
    return 0
