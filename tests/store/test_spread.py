"""Seed spread: runs of one recipe (the recorded config without seeds and run-local fields) are grouped, and a
claim shows n, mean and sample std of its best result's group, counting only results the verification rule
accepts; in `eca claims` (text and --json) and on the leaderboard's Claims page."""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, update

from ecaplatform.cli.main import main as eca
from ecaplatform.store.database import session_scope
from ecaplatform.store.schema import Run
from ecaplatform.store.spread import recipe, recipe_key, run_seed, seed_spread, spread_label
from tests.leaderboard_data import (
    RunSpec,
    add_runs,
    add_seed_runs,
    claim_rows,
    clear_app_caches,
    create_store,
    fit_config,
    run_app,
)

R50_TOP1 = "eca_resnet50-imagenet-top1"
SEED_VALUES = (77.61, 77.30, 77.35)  # seeds 0, 1, 2: mean 77.42, sample std 0.1664


@pytest.fixture
def store() -> Iterator[Engine]:
    clear_app_caches()
    engine = create_store(os.environ["ECA_DB_URL"])
    yield engine
    engine.dispose()


def _claims_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, dict]:
    assert eca(["claims", "--json", *args]) == 0
    return {record["id"]: record for record in json.loads(capsys.readouterr().out)}


def _three_seeds_and_distractors(engine: Engine) -> None:
    """Three seeds of one recipe, and results that must not join their group: another lr (qualifying, lower),
    the same recipe on a 10,000-image subset and in a failed run (neither qualifies), a validate run."""
    add_seed_runs(engine, SEED_VALUES)
    add_runs(engine, [
        RunSpec(id="lr-0.2", command="fit", top1=77.50, config=fit_config(7, lr=0.2)),
        RunSpec(id="subset-seed-3", command="fit", top1=77.00, config=fit_config(3), samples_evaluated=10_000,
                split_size=10_000),
        RunSpec(id="failed-seed-4", command="fit", status="failed", top1=77.55, config=fit_config(4)),
        RunSpec(id="validate-released", command="validate", top1=77.40, config=fit_config(0)),
    ])  # fmt: skip


# ------------------------------------------------------------------------------------------------- recipes


def test_same_recipe_with_other_seeds_and_run_folders_is_one_group_another_lr_is_not() -> None:
    seed0 = fit_config(0, run_dir="runs/a")
    assert recipe_key(seed0) == recipe_key(fit_config(1, run_dir="runs/b")) == recipe_key(fit_config(42))
    assert recipe_key(fit_config(0, lr=0.2)) != recipe_key(seed0)
    stripped = recipe(seed0)
    assert "seed_everything" not in stripped and "seed" not in stripped["data"]["init_args"]
    assert {"job", "checkpoint", "ckpt_path"}.isdisjoint(stripped)
    assert "default_root_dir" not in stripped["trainer"] and "num_workers" not in stripped["data"]["init_args"]
    assert seed0["seed_everything"] == 0 and seed0["data"]["init_args"]["seed"] == 0  # the run's config is untouched


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("data", "init_args", "root"), "/other/imagenet"),  # the data: a path that names the experiment's input
        (("data", "init_args", "split_seed"), 1),  # which images are validated: not a run seed
        (("data", "init_args", "batch_size"), 512),
        (("trainer", "devices"), 4),  # per-device batch statistics
        (("trainer", "precision"), "32-true"),
        (("model", "checkpoint"), "init.pth"),  # the initial weights
    ],
)
def test_what_changes_the_experiment_changes_the_recipe(path: tuple[str, ...], value: object) -> None:
    changed = fit_config(0)
    node = changed
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert recipe_key(changed) != recipe_key(fit_config(0))


def test_a_data_section_without_class_path_and_a_missing_config() -> None:
    plain = {"seed_everything": 1, "model": {"lr": 0.1}, "data": {"seed": 1, "batch_size": 8}}
    assert recipe_key(plain) == recipe_key({**plain, "seed_everything": 2, "data": {"seed": 2, "batch_size": 8}})
    assert recipe_key(plain) != recipe_key({**plain, "data": {"seed": 1, "batch_size": 16}})
    assert recipe_key({}) is None and recipe_key(None) is None  # nothing recorded: groups with nothing
    assert run_seed(fit_config(3)) == 3 and run_seed({"seed_everything": 1, "data": {"seed": 5}}) == [1, 5]


# -------------------------------------------------------------------------------------------------- numbers


def test_spread_numbers() -> None:
    spread = seed_spread(SEED_VALUES)
    assert (spread.n, spread.min, spread.max) == (3, 77.30, 77.61)
    assert spread.mean == pytest.approx(77.42)
    assert spread.std == pytest.approx(0.166433, abs=1e-6)  # sample (n - 1) standard deviation, by hand:
    assert spread.std == pytest.approx(((0.19**2 + 0.12**2 + 0.07**2) / 2) ** 0.5)
    assert spread.std != pytest.approx(statistics.pstdev(SEED_VALUES))  # not the population one
    one = seed_spread([77.61])
    assert (one.n, one.mean, one.std, one.min, one.max) == (1, 77.61, None, 77.61, 77.61)
    with pytest.raises(ValueError, match="at least one value"):
        seed_spread([])


def test_spread_label_says_seeds_only_when_every_run_had_its_own() -> None:
    assert spread_label(seed_spread(SEED_VALUES, seeds=(0, 1, 2))) == "best of 3 seeds: 77.42 ± 0.17"
    assert spread_label(seed_spread(SEED_VALUES, seeds=(0, 0, 2))) == "best of 3 runs: 77.42 ± 0.17"
    assert spread_label(seed_spread(SEED_VALUES, seeds=(False, False, False))) == "best of 3 runs: 77.42 ± 0.17"
    assert spread_label(seed_spread([77.61], seeds=(0,))) == "n=1"
    assert spread_label(None) == ""


# ---------------------------------------------------------------------------------------------- eca claims


def test_claims_json_shows_the_spread_of_the_best_results_recipe_counting_only_qualifying_results(
    store: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    _three_seeds_and_distractors(store)
    record = _claims_json(capsys)[R50_TOP1]
    assert (record["status"], record["verified_value"], record["evidence_run_id"]) == ("Verified", 77.61, "seed-0")
    spread = record["seed_spread"]
    assert spread["run_ids"] == ["seed-0", "seed-2", "seed-1"]  # best first; no lr-0.2, subset, failed, validate
    assert spread["seeds"] == [0, 2, 1]
    assert (spread["n"], spread["min"], spread["max"]) == (3, 77.30, 77.61)
    assert spread["mean"] == pytest.approx(77.42) and spread["std"] == pytest.approx(0.166433, abs=1e-6)
    assert spread["recipe_key"] == recipe_key(fit_config(0))
    assert record["evidence_fingerprint"]["num_samples"] == 50_000 and record["evidence_pipeline"] == "torchvision"
    top5 = _claims_json(capsys)["eca_resnet50-imagenet-top5"]  # no top-5 recorded: no evidence, no spread
    assert (top5["status"], top5["seed_spread"], top5["evidence_fingerprint"]) == ("Unverified", None, None)


def test_a_better_run_of_another_recipe_takes_the_claim_and_its_own_group(
    store: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    add_seed_runs(store, SEED_VALUES)
    add_seed_runs(store, (77.90, 77.70), prefix="lr02", lr=0.2)
    spread = _claims_json(capsys)[R50_TOP1]["seed_spread"]
    assert (spread["n"], spread["run_ids"], spread["mean"]) == (2, ["lr02-0", "lr02-1"], pytest.approx(77.80))


def test_a_single_run_shows_n_1_and_no_std(store: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    add_runs(store, [
        RunSpec(id="r101-validate", model="eca_resnet101", command="validate", top1=78.70, config=fit_config(0)),
        RunSpec(id="r101-validate-again", model="eca_resnet101", command="validate", top1=78.70,
                config=fit_config(1)),  # evaluating a checkpoint again is no new seed
        RunSpec(id="r152-fit", model="eca_resnet152", command="fit", top1=78.95, config=fit_config(0)),
        RunSpec(id="r152-other-lr", model="eca_resnet152", command="fit", top1=78.90, config=fit_config(1, lr=0.3)),
        RunSpec(id="mbv2-a", model="eca_mobilenet_v2", command="fit", top1=72.60),
        RunSpec(id="mbv2-b", model="eca_mobilenet_v2", command="fit", top1=72.50),
    ])  # fmt: skip
    with session_scope(store) as session:  # runs recorded without a config: nothing says they share a recipe
        session.execute(update(Run).where(Run.id.in_(["mbv2-a", "mbv2-b"])).values(config={}))
    records = _claims_json(capsys)
    for claim_id in ("eca_resnet101-imagenet-top1", "eca_resnet152-imagenet-top1", "eca_mobilenet_v2-imagenet-top1"):
        spread = records[claim_id]["seed_spread"]
        assert (spread["n"], spread["std"], len(spread["run_ids"])) == (1, None, 1), claim_id
    assert eca(["claims", "--model", "eca_resnet101"]) == 0
    assert "78.70 (n=1)" in capsys.readouterr().out


def test_the_same_spread_from_sqlite_and_postgresql(
    store_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = create_store(store_url)  # the JSON config column and the query's IN/OR on both backends
    _three_seeds_and_distractors(engine)
    engine.dispose()
    monkeypatch.setenv("ECA_DB_URL", store_url)
    spread = _claims_json(capsys, "--model", "eca_resnet50")[R50_TOP1]["seed_spread"]
    assert (spread["n"], spread["run_ids"], spread["seeds"]) == (3, ["seed-0", "seed-2", "seed-1"], [0, 2, 1])


def test_claims_text_puts_the_spread_beside_the_best_value(store: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    _three_seeds_and_distractors(store)
    assert eca(["claims", "--public"]) == 0
    out = capsys.readouterr().out
    r50 = next(line for line in out.splitlines() if "(ResNet-50)" in line)
    assert "77.61 (best of 3 seeds: 77.42 ± 0.17)" in r50 and "Verified" in r50 and "seed-0" in r50
    assert "qualifying results" in out  # the footnote says what counts


# --------------------------------------------------------------------------------------------- leaderboard


def test_claims_page_shows_the_spread_beside_the_verified_value(store: Engine) -> None:
    _three_seeds_and_distractors(store)
    add_runs(store, [RunSpec(id="r101-validate", model="eca_resnet101", command="validate", top1=78.70)])
    at = run_app()
    rows = claim_rows(at)
    r50 = rows["ECA-Net (ResNet-50)/Top-1 Accuracy"]
    assert r50["Verified"][0] == "77.61" and r50["Seed spread"][0] == "best of 3 seeds: 77.42 ± 0.17"
    assert rows["ECA-Net (ResNet-101)/Top-1 Accuracy"]["Seed spread"][0] == "n=1"
    assert rows["ECA-Net (ResNet-152)/Top-1 Accuracy"]["Seed spread"][0] == "–"
    hover = next(h.value for h in at.html if "best of 3 seeds" in h.value)
    assert "seed-0, seed-2, seed-1" in hover and "lr-0.2" not in hover and "subset-seed-3" not in hover
    assert any("qualifying results" in c.value for c in at.caption)


def test_claims_page_without_a_store_has_no_spreads() -> None:
    clear_app_caches()
    rows = claim_rows(run_app())
    assert {row["Seed spread"][0] for row in rows.values()} == {"–"}

