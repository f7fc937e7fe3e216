"""The leaderboard against a real PostgreSQL server: same pages, read-only transactions."""

from __future__ import annotations

import pytest

from ecaplatform.store.database import Store
from tests.leaderboard_data import RunSpec, add_runs, chart_data, claim_rows, clear_app_caches, create_store, run_app

pytestmark = pytest.mark.postgres


@pytest.fixture(autouse=True)
def _fresh_caches() -> None:
    clear_app_caches()


def test_pages_read_a_postgresql_store(fresh_postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = create_store(fresh_postgres_url)
    add_runs(
        engine,
        [
            RunSpec(id="pg-r50", top1=77.49, top5=93.60, epochs=3, command="fit"),
            RunSpec(id="pg-r152-sub", model="eca_resnet152", top1=80.0, samples_evaluated=1_000, split_size=1_000),
        ],
    )
    engine.dispose()
    monkeypatch.setenv("ECA_DB_URL", fresh_postgres_url)

    rows = claim_rows(run_app())
    r50 = rows["ECA-Net (ResNet-50)/Top-1 Accuracy"]
    assert (r50["Status"][0], r50["Verified"][0], r50["Evidence"][0]) == ("Verified", "77.49", "pg-r50")
    r152 = rows["ECA-Net (ResNet-152)/Top-1 Accuracy"]
    assert r152["Status"][0] == "Unverified" and "a subset" in r152["note"][0]

    loss, accuracy = chart_data(run_app("views/run.py", {"run": "pg-r50"}))
    assert accuracy[accuracy["name"] == "val_top1"]["epoch"].tolist() == [0, 1, 2]


def test_postgresql_engine_is_read_only(fresh_postgres_url: str) -> None:
    create_store(fresh_postgres_url).dispose()
    engine = Store.at(fresh_postgres_url).reader()
    assert engine is not None
    with pytest.raises(Exception, match="read-only transaction"), engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM claims")
    engine.dispose()


def test_empty_postgresql_database_shows_the_claims(fresh_postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECA_DB_URL", fresh_postgres_url)  # a database nobody has migrated yet
    rows = claim_rows(run_app())
    assert rows["ECA-Net (MobileNetV2)/Top-1 Accuracy"]["Claimed"][0] == "72.56"
    assert all(row["Status"][0] == "Unverified" for row in rows.values())


def test_no_page_shows_the_password_of_the_store(fresh_postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = create_store(fresh_postgres_url)
    add_runs(engine, [RunSpec(id="pg-r50", top1=77.49, top5=93.60, epochs=2, command="fit")])
    engine.dispose()
    monkeypatch.setenv("ECA_DB_URL", fresh_postgres_url.replace("postgres@", "postgres:s3cret-pw@", 1))
    for page, query in [(None, None), ("views/runs.py", {}), ("views/run.py", {"run": "pg-r50"}),
                        ("views/run.py", {"run": "no-such-run"}), ("views/compare.py", {})]:  # fmt: skip
        clear_app_caches()
        at = run_app(page, query)
        assert "s3cret-pw" not in "".join(str(node.proto) for node in at.main), page
        if page is None:  # the claims page names the store it reads, password hidden
            assert "postgres\\:\\*\\*\\*@127.0.0.1" in at.caption[0].value
