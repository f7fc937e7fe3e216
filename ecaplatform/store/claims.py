"""The claims registry: claims/eca_net.yaml -> the `claims` table, idempotently.

The YAML says which claims there are (model, task, dataset, split, metric, tolerance, ...); the paper's numbers and
labels (claimed value, backbone, method, source) come from ecaplatform/paper.py, so they are written down once.
Loading it again updates changed fields in place and never duplicates a claim.
Claims that disappear from the file are kept (runs may reference them) but are reported by `sync_claims`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from ecaplatform.paper import paper_number
from ecaplatform.store.database import session_scope, upsert
from ecaplatform.store.schema import Claim

CLAIMS_ENV_VAR = "ECA_CLAIMS_FILE"
CLAIMS_FILE_NAME = "eca_net.yaml"
# The metrics a claim of each task can name: the names its results' `metrics` carry.
_AP = ("ap", "ap50", "ap75", "aps", "apm", "apl")  # COCOeval's first six stats, percent
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("top1", "top5"),
    "detection": tuple(f"box_{s}" for s in _AP),  # Table 5
    "instance_segmentation": tuple(f"mask_{s}" for s in _AP),  # Table 6
}
METRICS = tuple(dict.fromkeys(name for names in TASK_METRICS.values() for name in names))
REQUIRED_FIELDS = (
    "id", "paper", "model", "task", "dataset", "split", "expected_samples", "expected_classes", "metric", "tolerance",
)  # fmt: skip
KNOWN_FIELDS = {*REQUIRED_FIELDS, "label", "public"}
PAPER_FIELDS = ("claimed", "backbone", "method", "source")  # from ecaplatform.paper.RESULTS, never from the YAML


class ClaimsFileError(ValueError):
    """The claims YAML is missing or malformed; the message names the file, the claim and the field."""


def claims_file() -> Path:
    """Where the claims YAML is: `$ECA_CLAIMS_FILE`, else `claims/eca_net.yaml` at the repository root
    (the package is installed editable)."""
    override = os.environ.get(CLAIMS_ENV_VAR)
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise ClaimsFileError(f"{CLAIMS_ENV_VAR}={override}: no such file")
        return path
    path = Path(__file__).resolve().parents[2] / "claims" / CLAIMS_FILE_NAME
    if not path.is_file():
        raise ClaimsFileError(
            f"claims file {path} not found; install ecaplatform editable from the repository "
            f"(`pip install -e .`) or set {CLAIMS_ENV_VAR} to the path of {CLAIMS_FILE_NAME}"
        )
    return path


@dataclass
class SyncReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    not_in_file: list[str] = field(default_factory=list)  # in the store, no longer in the YAML (kept)


def read_claims(path: Path | None = None) -> list[dict[str, Any]]:
    """The claims in the YAML as complete field dicts (defaults applied; the paper's fields, label and position
    filled in), validated."""
    path = path or claims_file()
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ClaimsFileError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("claims"), list):
        raise ClaimsFileError(f"{path}: expected a mapping with a `claims:` list (and optional `defaults:`)")
    defaults = document.get("defaults") or {}
    claims: list[dict[str, Any]] = []
    seen: set[str] = set()
    for position, entry in enumerate(document["claims"]):
        if not isinstance(entry, dict):
            raise ClaimsFileError(f"{path}: claims[{position}] is not a mapping")
        claim = {**defaults, **entry}
        where = f"{path}: claim {claim.get('id', f'#{position}')!r}"
        given = [name for name in PAPER_FIELDS if name in claim]
        if given:
            raise ClaimsFileError(f"{where}: remove {given}; those fields come from ecaplatform/paper.py")
        unknown = sorted(set(claim) - KNOWN_FIELDS)
        if unknown:
            raise ClaimsFileError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(KNOWN_FIELDS)}")
        missing = [name for name in REQUIRED_FIELDS if claim.get(name) is None]
        if missing:
            raise ClaimsFileError(f"{where}: missing field(s) {missing}")
        metrics = TASK_METRICS.get(claim["task"])
        if metrics is None:
            raise ClaimsFileError(f"{where}: task {claim['task']!r} is not one of {sorted(TASK_METRICS)}")
        if claim["metric"] not in metrics:
            raise ClaimsFileError(f"{where}: metric {claim['metric']!r} is not one of {claim['task']}'s {metrics}")
        tolerance = claim["tolerance"]
        if not isinstance(tolerance, (int, float)) or tolerance < 0:
            raise ClaimsFileError(f"{where}: tolerance must be a non-negative number (percent), got {tolerance!r}")
        if claim["id"] in seen:
            raise ClaimsFileError(f"{where}: duplicate id")
        seen.add(claim["id"])
        row = paper_number(claim["model"], claim["metric"])
        if row is None:
            raise ClaimsFileError(f"{where}: ecaplatform/paper.py has no {claim['metric']} for {claim['model']!r}")
        claim.update(claimed=row.value, backbone=row.backbone, method=row.method, source=row.source,
                     tolerance=float(tolerance))
        claim.setdefault("label", f"{claim['method']} ({claim['backbone']})")
        claim["public"] = bool(claim.get("public", False))
        claim["position"] = position
        claims.append(claim)
    return claims


def sync_claims(session: Session, path: Path | None = None) -> SyncReport:
    """Upsert every claim of the YAML into the store. Running it twice changes nothing the second time."""
    report = SyncReport()
    existing = {row["id"]: row for row in session.execute(select(Claim.__table__)).mappings()}
    changed = []
    for fields in read_claims(path):
        row = existing.pop(fields["id"], None)
        if row is not None and all(row[name] == value for name, value in fields.items()):
            report.unchanged.append(fields["id"])
            continue
        (report.added if row is None else report.updated).append(fields["id"])
        changed.append(fields)
    if changed:  # an upsert: a claim another process inserted since our read is updated, not a conflict
        upsert(session, Claim, changed, keys=("id",), copy=[name for name in changed[0] if name != "id"])
    report.not_in_file = sorted(existing)
    return report


def file_claims(path: Path | None = None) -> list[Claim]:
    """The claims of the YAML as transient Claim objects (nothing is read from or written to a store)."""
    return [Claim(**fields) for fields in read_claims(path)]


def claim_ids(path: Path | None = None) -> list[str]:
    """The ids of the claims in the YAML, in file order (what a job's `claim:` may name)."""
    return [claim["id"] for claim in read_claims(path)]


_claims_synced: set[str] = set()  # store URLs this process has loaded the YAML into


def ensure_claims(engine: Engine, path: Path | None = None) -> None:
    """Load the claims YAML into the store once per process (before a run references a claim)."""
    key = f"{engine.url}|{path or ''}"
    if key not in _claims_synced:
        with session_scope(engine) as session:
            sync_claims(session, path)
        _claims_synced.add(key)
