"""Seed spread: how much a claim's best result owes to its seed. The one place that says what a recipe is.

**Recipe.** Two fit runs are runs of the same recipe when their recorded resolved configs (`runs.config`, as
`--print_config` shows it) are equal after removing (RECIPE_IGNORED, by dotted path; a `data` section's keys are
looked up both directly and under `init_args`):
- the seeds: `seed_everything` and the data module's `data.init_args.seed` (training order and augmentation).
  `data.init_args.split_seed` stays: it chooses which images are validated, so another one is another experiment;
- where and how a run is launched, saved and logged, never what it computes: the `job` section (name, claim,
  launcher, SLURM resources, W&B; the world size the numbers depend on is `trainer.devices`/`trainer.num_nodes`,
  which stay), the `checkpoint` section (which files are kept; a fit's result is the final validation of the
  trained model whatever is saved), `ckpt_path`, `from_run`, `extends`, `weights_only`, `trust_ckpt_hparams`
  (how a resume finds its file; a resumed run is the same run), `trainer.default_root_dir`, `trainer.logger`,
  `trainer.enable_checkpointing`, `trainer.enable_progress_bar`, `trainer.enable_model_summary`,
  `trainer.log_every_n_steps`;
- pure throughput knobs of the data module: `num_workers`, `pin_memory`, `eval_batch_size`, `show_progress`
  (at most they reshuffle the random streams, as a seed does; evaluation runs in eval mode at any batch size).
Everything else stays, paths included: `data.init_args.root` and `model.checkpoint` name the data and the initial
weights, so the same recipe on another machine's copy of ImageNet forms a group of its own. Grouping errs towards
smaller groups, never towards mixing experiments. The code version (git commit) is not part of the recipe.

**Spread.** A claim's spread is over the qualifying results (`verification.disqualification` says none: succeeded,
the whole split counted once, the reference pipeline) of the best qualifying result's recipe group, one value per
run (its best, so the group's maximum is the claim's value). Only fit runs form groups: a validate or test result
evaluates one checkpoint, and evaluating it again is no new seed, so it is a group of one. A run without a
recorded config is a group of one too. n = 1 has no standard deviation.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ecaplatform.store.pipelines import REFERENCE_PIPELINE
from ecaplatform.store.schema import Claim, Result, Run
from ecaplatform.store.verification import disqualification, metric_value, run_status_expression

# One sentence for every reader (the leaderboard's caption, `eca export`'s board.json).
SPREAD_RULE = (
    "Seed spread: n, mean and sample standard deviation of the qualifying results (those the verification rule "
    "accepts as evidence) of the fit runs that share the best result's recipe, i.e. its recorded config without "
    "seeds, paths and logging (ecaplatform/store/spread.py); a validate or test result counts alone (n=1)."
)

SEED_PATHS: tuple[str, ...] = ("seed_everything", "data.seed")
RECIPE_IGNORED: tuple[str, ...] = (
    *SEED_PATHS,
    "job",
    "checkpoint",
    "ckpt_path",
    "from_run",
    "extends",
    "weights_only",
    "trust_ckpt_hparams",
    "trainer.default_root_dir",
    "trainer.logger",
    "trainer.enable_checkpointing",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "data.num_workers",
    "data.pin_memory",
    "data.eval_batch_size",
    "data.show_progress",
)
# Sections that LightningCLI records as {"class_path": ..., "init_args": {...}} (a subclass) or as plain keys.
_SUBCLASS_SECTIONS = ("data",)


def _drop(config: dict[str, Any], path: str) -> None:
    section, _, rest = path.partition(".")
    if not rest:
        config.pop(section, None)
        return
    node = config.get(section)
    if not isinstance(node, dict):
        return
    targets = [node]
    if section in _SUBCLASS_SECTIONS and isinstance(node.get("init_args"), dict):
        targets.append(node["init_args"])
    for target in targets:
        _drop(target, rest)


def _deep_copy(value: Any) -> Any:
    # JSON data only (what the store holds): cheaper and stricter than copy.deepcopy.
    if isinstance(value, dict):
        return {str(k): _deep_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_deep_copy(v) for v in value]
    return value


def recipe(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The run's recipe: its recorded config without RECIPE_IGNORED (see the module docstring)."""
    stripped = _deep_copy(dict(config or {}))
    for path in RECIPE_IGNORED:
        _drop(stripped, path)
    return stripped


def recipe_key(config: Mapping[str, Any] | None) -> str | None:
    """sha256 of the recipe as canonical JSON; None for a run without a recorded config (it groups with nothing)."""
    if not config:
        return None
    canonical = json.dumps(recipe(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def run_seed(config: Mapping[str, Any] | None) -> Any:
    """The seed(s) the recipe leaves out, as recorded: seed_everything, or [seed_everything, data seed] when the
    data module's seed is set apart from it; None if neither is recorded."""
    config = config or {}
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    data_args = data.get("init_args") if isinstance(data.get("init_args"), dict) else data
    top, data_seed = config.get("seed_everything"), data_args.get("seed")
    return top if data_seed is None or data_seed == top else [top, data_seed]


def _is_seed(value: Any) -> bool:
    # LightningCLI records the seed it drew for `seed_everything: true`; False (no seeding) is no seed.
    if isinstance(value, list):
        return all(_is_seed(v) for v in value)
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class SeedSpread:
    """Summary of one recipe group's values (percent)."""

    n: int
    mean: float
    std: float | None  # sample standard deviation (n - 1); None for n = 1
    min: float
    max: float
    run_ids: tuple[str, ...] = ()  # the group's runs, best value first
    seeds: tuple[Any, ...] = ()  # their seeds as recorded (run_seed), in the same order
    recipe_key: str | None = None

    @property
    def distinct_seeds(self) -> bool:
        """Whether every run is known to have had a seed of its own (`seed_everything: false` seeds nothing)."""
        known = [json.dumps(seed) for seed in self.seeds if _is_seed(seed)]
        return len(known) == self.n and len(set(known)) == self.n

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "mean": self.mean, "std": self.std, "min": self.min, "max": self.max,
                "run_ids": list(self.run_ids), "seeds": list(self.seeds), "recipe_key": self.recipe_key}  # fmt: skip


def seed_spread(values: Sequence[float], **group: Any) -> SeedSpread:
    """n, mean, sample standard deviation, min and max of `values` (at least one); `group` fills the other fields."""
    if not values:
        raise ValueError("seed_spread needs at least one value")
    values = [float(v) for v in values]
    std = statistics.stdev(values) if len(values) > 1 else None
    return SeedSpread(n=len(values), mean=statistics.fmean(values), std=std, min=min(values), max=max(values), **group)


def spread_label(spread: SeedSpread | None) -> str:
    """`best of 3 seeds: 77.42 ± 0.16` (`runs` where seeds repeat or were not recorded), `n=1` for one run."""
    if spread is None:
        return ""
    if spread.n == 1 or spread.std is None:
        return "n=1"
    word = "seeds" if spread.distinct_seeds else "runs"
    return f"best of {spread.n} {word}: {spread.mean:.2f} ± {spread.std:.2f}"


@dataclass(frozen=True)
class ClaimEvidence:
    """What the claim's best qualifying result is (fingerprint, pipeline) and the spread of its recipe group."""

    claim_id: str
    run_id: str
    value: float
    fingerprint: dict[str, Any] = field(default_factory=dict)
    pipeline: str = REFERENCE_PIPELINE  # a result stored before pipelines were recorded came from the reference
    spread: SeedSpread | None = None


def claim_evidence(session: Session, claims: Iterable[tuple[Claim, str | None]]) -> dict[str, ClaimEvidence]:
    """For each (claim, evidence run id) with an evidence run: its evidence result and seed spread, keyed by claim
    id. Two queries whatever the number of claims or runs: the candidate results, then the configs of the fit runs
    of the models whose evidence is a fit run (a config is a few kB: only those are read)."""
    wanted = [(claim, run_id) for claim, run_id in claims if run_id]
    if not wanted:
        return {}
    rows = session.execute(
        select(Result, run_status_expression(), Run.command)
        .join(Run, Run.id == Result.run_id)
        .where(
            Result.model_name.in_(sorted({claim.model for claim, _ in wanted})),
            Result.dataset.in_(sorted({claim.dataset for claim, _ in wanted})),
            Result.split.in_(sorted({claim.split for claim, _ in wanted})),
            # Pre-filters only (the rule below decides): a stored `succeeded` is shown so, and only fit runs form
            # groups; an evidence run is read whatever its command.
            Run.status == "succeeded",
            or_(Run.command == "fit", Run.id.in_(sorted({run_id for _, run_id in wanted if run_id}))),
        )
    ).all()
    by_model: dict[str, list[tuple[Result, str | None, str]]] = defaultdict(list)
    for result, status, command in rows:
        by_model[result.model_name].append((result, status, command))

    found: list[tuple[Claim, str, dict[str, tuple[float, Result, str]]]] = []
    for claim, evidence_run in wanted:
        best: dict[str, tuple[float, Result, str]] = {}  # each qualifying run's best value, and its result
        for result, status, command in by_model[claim.model]:
            value = metric_value(claim, result)
            if value is None or disqualification(claim, result, status) is not None:
                continue
            if result.run_id not in best or value > best[result.run_id][0]:
                best[result.run_id] = (value, result, command)
        if evidence_run in best:  # else the store changed since the claim was judged: say nothing, never guess
            found.append((claim, evidence_run, best))

    grouped_models = sorted({claim.model for claim, run_id, best in found if best[run_id][2] == "fit"})
    configs: dict[str, dict[str, Any]] = {}
    if grouped_models:
        fit_runs = select(Run.id, Run.config).where(
            Run.model_name.in_(grouped_models), Run.command == "fit", Run.status == "succeeded"
        )
        configs = {run_id: config or {} for run_id, config in session.execute(fit_runs)}
    keys = {run_id: recipe_key(config) for run_id, config in configs.items()}

    answer: dict[str, ClaimEvidence] = {}
    for claim, evidence_run, best in found:
        value, result, command = best[evidence_run]
        key = keys.get(evidence_run) if command == "fit" else None
        if key is None:
            members = [evidence_run]
        else:
            members = [run_id for run_id, (_, _, cmd) in best.items() if cmd == "fit" and keys.get(run_id) == key]
        # Best first; on a tie the evidence run leads, as it is the one the claim names.
        members.sort(key=lambda run_id: (-best[run_id][0], run_id != evidence_run, run_id))
        spread = seed_spread(
            [best[run_id][0] for run_id in members],
            run_ids=tuple(members),
            seeds=tuple(run_seed(configs.get(run_id)) for run_id in members),
            recipe_key=key,
        )
        answer[claim.id] = ClaimEvidence(
            claim_id=claim.id, run_id=evidence_run, value=value, fingerprint=dict(result.fingerprint or {}),
            pipeline=result.pipeline or REFERENCE_PIPELINE, spread=spread,
        )  # fmt: skip
    return answer
