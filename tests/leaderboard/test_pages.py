"""The leaderboard app, run headless with Streamlit's AppTest against real SQLite stores built per test."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ecaplatform.cli import leaderboard as leaderboard_launcher
from leaderboard import queries
from tests.leaderboard_data import (
    HOSTILE,
    HOSTILE_RUN_IDS,
    RunSpec,
    add_hostile_runs,
    add_runs,
    chart_data,
    claim_rows,
    clear_app_caches,
    create_store,
    html_tables,
    run_app,
    unsafe_markup,
)

PUBLIC_CLAIMS = {
    "ECA-Net (ResNet-152)": "78.92",
    "ECA-Net (ResNet-101)": "78.65",
    "ECA-Net (ResNet-50)": "77.48",
    "ECA-Net (MobileNetV2)": "72.56",
}


@pytest.fixture(autouse=True)
def _fresh_caches() -> None:
    clear_app_caches()


@pytest.fixture
def store_url() -> str:
    return os.environ["ECA_DB_URL"]


@pytest.fixture
def store(store_url: str):  # type: ignore[no-untyped-def]
    engine = create_store(store_url)
    yield engine
    engine.dispose()


# ------------------------------------------------------------------------------------------- claims page


def test_missing_store_shows_the_four_public_claims_unverified_and_how_to_produce_a_run(store_url: str) -> None:
    assert not Path(store_url.removeprefix("sqlite:///")).exists()  # a fresh user: no store file at all
    at = run_app()
    rows = claim_rows(at)
    assert list(rows)[:4] == [f"{label}/Top-1 Accuracy" for label in PUBLIC_CLAIMS]  # the public four first
    for label, claimed in PUBLIC_CLAIMS.items():
        row = rows[f"{label}/Top-1 Accuracy"]
        assert row["Claimed"][0] == claimed
        assert row["Status"][0] == "Unverified"
        assert row["Dataset"][0] == "ImageNet val"
        assert row["Verified"][0] == "–"
    assert all(row["Status"][0] == "Unverified" for row in rows.values())
    assert len(rows) > 4  # the rest of the claims file is listed too
    hint = " ".join(i.value for i in at.info)
    assert "make demo" in hint and "eca submit" in hint
    page_text = " ".join(h.value for h in at.html)
    assert "1910.03151" in page_text and "github.com/BangguWu/ECANet" in page_text and "Qilong Wang" in page_text
    assert not Path(store_url.removeprefix("sqlite:///")).exists()  # looking must not create the store


def test_store_without_tables_still_shows_the_claims(store_url: str) -> None:
    path = Path(store_url.removeprefix("sqlite:///"))
    path.touch()  # an empty database file, never migrated
    rows = claim_rows(run_app())
    assert rows["ECA-Net (ResNet-50)/Top-1 Accuracy"]["Status"][0] == "Unverified"


def test_qualifying_result_verifies_the_claim_and_links_its_run(store) -> None:  # type: ignore[no-untyped-def]
    add_runs(store, [RunSpec(id="run-r50-full", model="eca_resnet50", top1=77.50, top5=93.70)])
    at = run_app()
    row = claim_rows(at)["ECA-Net (ResNet-50)/Top-1 Accuracy"]
    assert row["Status"][0] == "Verified"
    assert row["Verified"][0] == "77.50"
    assert row["Δ"][0] == "+0.02"
    assert row["Samples evaluated"][0] == "50,000 / 50,000"
    assert row["Evidence"] == ("run-r50-full", ["run?run=run-r50-full"])
    # The other public claims have no evidence and stay unverified.
    assert claim_rows(at)["ECA-Net (ResNet-101)/Top-1 Accuracy"]["Status"][0] == "Unverified"


def test_subset_and_padded_results_do_not_verify(store) -> None:  # type: ignore[no-untyped-def]
    add_runs(
        store,
        [
            # 10,000 of the val images, scored far above the claim: still not evidence.
            RunSpec(
                id="run-r101-subset", model="eca_resnet101", top1=80.0, samples_evaluated=10_000, split_size=10_000
            ),
            # A padded distributed sampler counted 16 images twice.
            RunSpec(id="run-r152-padded", model="eca_resnet152", top1=79.5, samples_evaluated=50_016),
        ],
    )
    rows = claim_rows(run_app())
    r101 = rows["ECA-Net (ResNet-101)/Top-1 Accuracy"]
    assert r101["Status"][0] == "Unverified"
    assert r101["Verified"][0] == "–" and r101["Evidence"][0] == "–"
    # The result is shown, with why it is not evidence, one click from its run.
    assert "best non-qualifying result: 80.00" in r101["note"][0] and "a subset" in r101["note"][0]
    assert r101["note"][1] == ["run?run=run-r101-subset"]
    r152 = rows["ECA-Net (ResNet-152)/Top-1 Accuracy"]
    assert r152["Status"][0] == "Unverified" and "50016 samples counted" in r152["note"][0]


def test_full_result_below_tolerance_is_not_reproduced_and_active_run_shows_running(store) -> None:  # type: ignore[no-untyped-def]
    add_runs(
        store,
        [
            RunSpec(id="run-r50-low", model="eca_resnet50", top1=77.00, top5=93.10),
            RunSpec(id="run-mbv2-now", model="eca_mobilenet_v2", status="running", command="fit", epochs=2),
        ],
    )
    rows = claim_rows(run_app())
    r50 = rows["ECA-Net (ResNet-50)/Top-1 Accuracy"]
    assert (r50["Status"][0], r50["Verified"][0], r50["Δ"][0]) == ("Not reproduced", "77.00", "-0.48")
    assert r50["Evidence"][1] == ["run?run=run-r50-low"]
    assert rows["ECA-Net (MobileNetV2)/Top-1 Accuracy"]["Status"][0] == "Running"


# Every page in a fresh interpreter (pytest's may have imported them already), then which heavy libraries it loaded.
EVERY_PAGE = """
import sys
from tests.leaderboard_data import run_app
for page, query in [(None, None), ("views/runs.py", {}), ("views/run.py", {"run": "run-a"}), ("views/compare.py", {})]:
    run_app(page, query)
print(sorted(name for name in ("torch", "lightning") if name in sys.modules))
"""


def _wal_frames(path: Path) -> int:
    """Frames in the store's write-ahead log (none when there is no -wal file): in WAL mode a commit lands there,
    not in the main file, until a checkpoint copies it over."""
    wal = path.with_name(path.name + "-wal")
    if not wal.exists() or wal.stat().st_size <= 32:  # absent, empty, or only the 32-byte header
        return 0
    page_size = int.from_bytes(wal.read_bytes()[8:12], "big")
    return (wal.stat().st_size - 32) // (24 + page_size)


def _store_content(path: Path) -> list[str]:
    """Everything the store holds, main file and write-ahead log together, as SQL (a fresh read-only connection)."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return list(conn.iterdump())


def test_pages_never_write_the_store_nor_import_torch_or_lightning(store, store_url: str) -> None:  # type: ignore[no-untyped-def]
    add_runs(store, [RunSpec(id="run-a", top1=77.6, top5=93.7, epochs=2)])
    store.dispose()  # the writer is done: checkpoints the WAL into the main file
    path = Path(store_url.removeprefix("sqlite:///"))
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    assert _wal_frames(path) == 0
    content = _store_content(path)
    done = subprocess.run([sys.executable, "-c", EVERY_PAGE], cwd=Path(__file__).parent, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]", "a leaderboard page imported torch or lightning"
    # A page's write may stay in the -wal file (only the last connection to close checkpoints it), so the
    # main file alone proves nothing: no frame may have been appended, and the content read through the log is the
    # same. (The -shm file is not compared: readers record their read marks there.)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before, "a page wrote the store's main file"
    assert _wal_frames(path) == 0, "a page wrote the store: its write-ahead log holds frames"
    assert _store_content(path) == content, "a page changed what the store holds"


def test_no_page_renders_html_or_markdown_from_the_store(store) -> None:  # type: ignore[no-untyped-def]
    add_hostile_runs(store)
    pages = [(None, None), ("views/runs.py", {}), ("views/compare.py", {}), ("views/run.py", {"run": HOSTILE + "?"}),
             ("views/reproductions.py", {}), ("views/reproduce.py", {"claim": "eca_resnet50-imagenet-top1"})]
    pages += [("views/run.py", {"run": run_id}) for run_id in HOSTILE_RUN_IDS]
    unsafe = {f"{page} {query}": unsafe_markup(run_app(page, query)) for page, query in pages}
    assert {page: found for page, found in unsafe.items() if found} == {}
    # The hostile values are still there to read, as text: the evidence link carries the id URL-quoted.
    rows = claim_rows(run_app())
    hostile_link = "run?run=x%60%27%22%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E"
    evidence = next(row["Evidence"] for row in rows.values() if row["Evidence"][1] == [hostile_link])
    assert evidence[0] == f"{HOSTILE[:9]}…{HOSTILE[-4:]}"  # shortened as text; the whole id is in the link


# ------------------------------------------------------------------------------------------ runs and run


def test_run_page_shows_learning_curves_results_and_provenance(store) -> None:  # type: ignore[no-untyped-def]
    add_runs(store, [RunSpec(id="run-fit", command="fit", job="train-eca_resnet50", top1=77.55, top5=93.8, epochs=4)])
    at = run_app("views/run.py", {"run": "run-fit"})
    loss, accuracy = chart_data(at)
    assert sorted(loss["name"].unique()) == ["train_loss", "val_loss"]
    assert sorted(accuracy["name"].unique()) == ["val_top1", "val_top5"]
    val_top1 = accuracy[accuracy["name"] == "val_top1"].sort_values("epoch")
    assert val_top1["epoch"].tolist() == [0, 1, 2, 3]
    assert val_top1["value"].iloc[-1] == pytest.approx(77.55)  # the curve ends at the recorded result
    assert val_top1["value"].is_monotonic_increasing
    assert any('<code>run-fit</code> <span class="eca-status verified">succeeded</span>' in h.value for h in at.html)
    assert any("ECA-Net (ResNet-50)" in s.value for s in at.success)  # evidence for the claim, said on the page
    provenance = {row["Field"][0]: row["Value"][0] for table in html_tables(at) for row in table if "Field" in row}
    assert provenance["Git commit"] == "0123456789abcdef0123456789abcdef01234567"
    assert provenance["torch"] == "2.14.1"
    assert "max_epochs: 4" in at.expander[-1].code[0].value  # the resolved config, as YAML, folded
    results = at.table[0].value
    assert results["top-1"].tolist() == ["77.55"] and results["Samples evaluated"].tolist() == ["50,000"]
    assert results["Pipeline"].tolist() == ["torchvision (not recorded)"]  # a result stored without its pipeline


def test_run_page_names_an_unknown_run(store) -> None:  # type: ignore[no-untyped-def]
    at = run_app("views/run.py", {"run": "no-such-run"})
    assert "no-such-run" in at.error[0].value


def test_runs_page_lists_and_filters_runs(store) -> None:  # type: ignore[no-untyped-def]
    add_runs(
        store,
        [
            RunSpec(id="run-ok", top1=77.5, top5=93.7, wandb_path="me/eca-net/abc123", wandb_mode="online"),
            RunSpec(id="run-bad", status="failed", model="eca_resnet101", job="verify-eca_resnet101"),
            RunSpec(id="run-demo", model="eca_resnet18", dataset="digits", job="demo-cpu", command="fit", epochs=2),
        ],
    )
    at = run_app("views/runs.py", {})
    listed = at.dataframe[0].value
    assert set(listed["run"]) == {"run?run=run-ok", "run?run=run-bad", "run?run=run-demo"}
    wandb = dict(zip(listed["run"], listed["wandb_url"], strict=True))
    assert wandb["run?run=run-ok"] == "https://wandb.ai/me/eca-net/runs/abc123"
    assert "3 of 3 runs" in at.caption[0].value

    at.multiselect(key="runs_status").set_value(["failed"]).run()
    assert at.dataframe[0].value["run"].tolist() == ["run?run=run-bad"]
    assert "1 of 3 runs" in at.caption[0].value
    at.multiselect(key="runs_status").set_value([]).run()
    at.multiselect(key="runs_dataset").set_value(["digits"]).run()
    assert at.dataframe[0].value["run"].tolist() == ["run?run=run-demo"]
    at.selectbox[0].set_value("run-demo").run()  # "Open a run" links to its run page
    link = at.get("page_link")[0].proto
    assert (link.label, link.query_string) == ("Run run-demo", "run=run-demo")


def test_a_running_run_that_stopped_beating_shows_lost_and_does_not_hold_its_claim(store) -> None:  # type: ignore[no-untyped-def]
    now = datetime.now(timezone.utc).replace(microsecond=0)
    last_beat = now - timedelta(hours=1)  # killed an hour ago: far past ECA_HEARTBEAT_TIMEOUT_S (300 s)
    add_runs(
        store,
        [
            RunSpec(id="run-lost", model="eca_mobilenet_v2", status="running", command="fit", job="train-mbv2",
                    epochs=2, started=now - timedelta(hours=2), heartbeat=last_beat),
            RunSpec(id="run-live", model="eca_resnet101", status="running", command="fit", job="train-r101",
                    epochs=1, started=now - timedelta(minutes=30)),  # beats now
        ],
    )  # fmt: skip
    at = run_app("views/runs.py", {})
    listed = at.dataframe[0].value.set_index("run")
    assert listed["status"].to_dict() == {"run?run=run-lost": "lost", "run?run=run-live": "running"}
    assert listed.loc["run?run=run-lost", "duration"] == "1h 00m"  # up to its last heartbeat, not "so far"
    assert "lost" in at.multiselect(key="runs_status").options  # offered even before any run is lost
    at.multiselect(key="runs_status").set_value(["lost"]).run()
    assert at.dataframe[0].value["run"].tolist() == ["run?run=run-lost"]
    at.multiselect(key="runs_status").set_value(["running"]).run()
    assert at.dataframe[0].value["run"].tolist() == ["run?run=run-live"]

    at = run_app("views/run.py", {"run": "run-lost"})
    assert any('<code>run-lost</code> <span class="eca-status lost">lost</span>' in h.value for h in at.html)
    [warning] = at.warning
    said = warning.value.replace("\\", "")
    assert f"stopped reporting at {last_beat:%Y-%m-%d %H:%M:%S} UTC" in said and "out of memory" in said
    assert "\n" not in warning.value
    # The advice resumes this run, not the job's newest (without --from_run it would continue another run).
    assert at.code[0].value == "eca submit jobs/train-mbv2.yaml -- --ckpt_path last --from_run run-lost"
    assert [m.value for m in at.metric if m.label == "Duration"] == ["1h 00m"]

    at = run_app("views/run.py", {"run": "run-live"})
    assert any('<code>run-live</code> <span class="eca-status running">running</span>' in h.value for h in at.html)
    assert not at.warning

    rows = claim_rows(run_app())
    assert rows["ECA-Net (MobileNetV2)/Top-1 Accuracy"]["Status"][0] == "Unverified"  # lost: no longer Running
    assert rows["ECA-Net (ResNet-101)/Top-1 Accuracy"]["Status"][0] == "Running"


def test_compare_page_puts_ours_next_to_the_paper(store) -> None:  # type: ignore[no-untyped-def]
    add_runs(store, [RunSpec(id="run-r50", top1=77.52, top5=93.70)])
    at = run_app("views/compare.py", {})
    tables = {h.value: None for h in at.subheader}
    assert "ResNet-50 · ImageNet val" in tables and "MobileNetV2 · ImageNet val" in tables  # each says its data
    r50 = next(t for t in html_tables(at) if any(r["Model"][0] == "eca_resnet50" for r in t))
    eca = next(r for r in r50 if r["Model"][0] == "eca_resnet50")
    assert (eca["Top-1 paper"][0], eca["Top-1 ours"][0], eca["Status"][0]) == ("77.48", "77.52", "Verified")
    assert eca["Evidence"][1] == ["run?run=run-r50"]
    baselines = {r["Method"][0] for r in r50}
    assert {"ResNet", "SENet", "CBAM", "ECA-Net"} <= baselines


# ----------------------------------------------------------------------------------------- pure helpers


def test_wandb_links_only_for_online_runs() -> None:
    assert queries.wandb_url("ent/proj/run1", "online") == "https://wandb.ai/ent/proj/runs/run1"
    assert queries.wandb_url("/home/me/wandb/offline-run-1", "offline") is None
    assert queries.wandb_url("ent/proj/run1", "offline") is None  # not uploaded yet: no page to open
    assert queries.wandb_url(None, "online") is None


def test_duration_of_finished_running_and_queued_runs() -> None:
    from datetime import datetime, timedelta, timezone

    start = datetime(2026, 1, 1, 12, 0)  # naive, as SQLite returns it
    assert queries.duration_seconds(start, start + timedelta(minutes=90)) == 5400
    assert queries.duration_seconds(None, None) is None
    now = datetime(2026, 1, 1, 12, 10, tzinfo=timezone.utc)
    assert queries.duration_seconds(start, None, now=now) == 600


EVERY_PAGE_QUERY = [(None, None), ("views/runs.py", {}), ("views/run.py", {"run": "run-a"}), ("views/compare.py", {})]


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("postgresql+psycopg://eca:s3cret-pw@127.0.0.1:{port}/eca", "cannot connect to the run store"),
        ("sqlite:///{tmp}/notes.db", "is not a SQLite database"),
    ],
    ids=["unreachable PostgreSQL", "not a database"],
)
def test_a_store_that_cannot_be_read_is_one_line_on_every_page_without_the_password(
    url: str, problem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services import free_port

    (tmp_path / "notes.db").write_text("my notes\n" * 50)
    monkeypatch.setenv("ECA_DB_URL", url.format(port=free_port(), tmp=tmp_path))
    for page, query in EVERY_PAGE_QUERY:
        clear_app_caches()
        at = run_app(page, query)
        [error] = at.error
        assert error.value.startswith("The run store cannot be read: ") and problem in error.value.replace("\\", "")
        everything = "".join(str(node.proto) for node in at.main)
        assert "s3cret-pw" not in everything and "Traceback" not in everything
    assert (tmp_path / "notes.db").read_text() == "my notes\n" * 50


def test_a_store_at_an_older_schema_is_one_line_on_every_page(store_url: str) -> None:
    from sqlalchemy import insert

    from ecaplatform.store.database import current_revision, make_engine, schema_behind, upgrade
    from ecaplatform.store.schema import Run

    engine = make_engine(store_url)
    upgrade(engine, "0001_initial")  # written by an ecaplatform from before heartbeats; readers never migrate
    with engine.begin() as conn:  # a run as that version recorded it: no heartbeat_at column
        conn.execute(
            insert(Run.__table__).values(id="run-a", job_name="old", command="fit", model_name="eca_resnet50",
                                         status="running", created_at=datetime.now(timezone.utc), config={},
                                         versions={}, num_nodes=1, world_size=1)
        )  # fmt: skip
    message = schema_behind(engine)
    assert message is not None and "0001_initial" in message
    tail = message.split(" is at schema ", 1)[1]  # schema_behind's message after the store's URL
    for page, query in EVERY_PAGE_QUERY:
        clear_app_caches()
        at = run_app(page, query)  # no exception
        [error] = at.error
        said = error.value.replace("\\", "")
        assert store_url.removeprefix("sqlite:///") in said and f" is at schema {tail}" in said
        assert "\n" not in error.value
        assert "Traceback" not in "".join(str(node.proto) for node in at.main)
    assert current_revision(engine) == "0001_initial"  # looking did not migrate it
    engine.dispose()


def test_launcher_names_a_bad_store_url_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert leaderboard_launcher.main(["--db-url", "postgresql://eca:s3cret-pw@db:port/eca", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("eca leaderboard: --db-url: ") and "is not a database URL" in err
    assert len(err.strip().splitlines()) == 1 and "s3cret-pw" not in err


# ------------------------------------------------------------------------------------------- launcher


def test_launcher_command_is_headless_without_usage_stats(capsys: pytest.CaptureFixture[str]) -> None:
    assert leaderboard_launcher.main(["--port", "8123", "--dry-run", "--theme.base", "dark"]) == 0
    command = capsys.readouterr().out.split()
    assert command[1:4] == ["-m", "streamlit", "run"] and command[4].endswith("leaderboard/app.py")
    flags = dict(zip(command[5::2], command[6::2], strict=True))
    assert flags["--server.headless"] == "true"
    assert flags["--server.port"] == "8123"
    assert flags["--browser.gatherUsageStats"] == "false"
    assert flags["--theme.base"] == "dark"  # unknown options go on to streamlit


def test_launcher_rejects_a_bad_port(capsys: pytest.CaptureFixture[str]) -> None:
    assert leaderboard_launcher.main(["--port", "70000", "--dry-run"]) == 2
    assert "--port 70000" in capsys.readouterr().err


def test_launcher_db_url_option_sets_the_store_for_the_server(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'other.db'}"
    assert leaderboard_launcher.main(["--db-url", url, "--dry-run"]) == 0
    assert os.environ["ECA_DB_URL"] == url  # the exec'd server inherits it (monkeypatch restores it afterwards)


@pytest.mark.slow
def test_new_runs_appear_after_the_cache_ttl_without_a_restart(store_url: str) -> None:
    from leaderboard import data

    assert claim_rows(run_app())["ECA-Net (ResNet-50)/Top-1 Accuracy"]["Status"][0] == "Unverified"  # no store yet
    engine = create_store(store_url)
    add_runs(engine, [RunSpec(id="run-late", top1=77.6, top5=93.7)])
    engine.dispose()
    time.sleep(data.CACHE_TTL_S + 0.5)  # same process, same caches: only the TTL lets the new run in
    row = claim_rows(run_app())["ECA-Net (ResNet-50)/Top-1 Accuracy"]
    assert (row["Status"][0], row["Evidence"][0]) == ("Verified", "run-late")


def test_runs_page_lists_a_run_of_unknown_duration_next_to_finished_ones(store) -> None:  # type: ignore[no-untyped-def]
    # A SLURM job still queued has not started: no duration. Beside a finished run's the column holds a NaN, which
    # the page once tried to round (ValueError: cannot convert float NaN to integer) instead of listing the runs.
    add_runs(store, [RunSpec(id="run-done", top1=77.5, top5=93.7), RunSpec(id="run-queued", status="queued")])
    from ecaplatform.store.database import session_scope
    from ecaplatform.store.schema import Run

    with session_scope(store) as session:
        session.get(Run, "run-queued").started_at = None
    at = run_app("views/runs.py", {})
    assert not at.exception
    listed = at.dataframe[0].value.set_index("run")
    assert listed.loc["run?run=run-queued", "duration"] == "-"
    assert listed.loc["run?run=run-done", "duration"] != "-"
