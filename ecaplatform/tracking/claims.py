"""The claims registry: claims/eca_net.yaml -> the `claims` table, idempotently.

The YAML is the source of truth; loading it again updates changed fields in place and never duplicates a claim.
Claims that disappear from the file are kept (runs may reference them) but are reported by `sync_claims`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ecaplatform.tracking.schema import Claim
from ecaplatform.tracking.store import session_scope

CLAIMS_ENV_VAR = "ECA_CLAIMS_FILE"
CLAIMS_FILE_NAME = "eca_net.yaml"
METRICS = ("top1", "top5")
REQUIRED_FIELDS = (
    "id", "paper", "backbone", "method", "model", "dataset", "split",
    "expected_samples", "expected_classes", "metric", "claimed", "tolerance", "source",
)  # fmt: skip
KNOWN_FIELDS = {*REQUIRED_FIELDS, "label", "public"}


class ClaimsFileError(ValueError):
    """The claims YAML is missing or malformed; the message names the file, the claim and the field."""


def claims_file() -> Path:
    """Where the claims YAML is: `$ECA_CLAIMS_FILE`, else `claims/eca_net.yaml` at the repository root
    (the package is installed editable), else a copy shipped inside the package."""
    override = os.environ.get(CLAIMS_ENV_VAR)
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise ClaimsFileError(f"{CLAIMS_ENV_VAR}={override}: no such file")
        return path
    package_dir = Path(__file__).resolve().parents[1]
    candidates = [package_dir.parent / "claims" / CLAIMS_FILE_NAME, package_dir / "claims" / CLAIMS_FILE_NAME]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise ClaimsFileError(
        f"claims file not found (tried {tried}); install ecaplatform editable from the repository "
        f"(`pip install -e .`) or set {CLAIMS_ENV_VAR} to the path of eca_net.yaml"
    )


@dataclass
class SyncReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    not_in_file: list[str] = field(default_factory=list)  # in the store, no longer in the YAML (kept)


def read_claims(path: Path | None = None) -> list[dict[str, Any]]:
    """The claims in the YAML as complete field dicts (defaults applied, label and position filled in), validated."""
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
        unknown = sorted(set(claim) - KNOWN_FIELDS)
        if unknown:
            raise ClaimsFileError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(KNOWN_FIELDS)}")
        missing = [name for name in REQUIRED_FIELDS if claim.get(name) is None]
        if missing:
            raise ClaimsFileError(f"{where}: missing field(s) {missing}")
        if claim["metric"] not in METRICS:
            raise ClaimsFileError(f"{where}: metric {claim['metric']!r} is not one of {METRICS}")
        for name in ("claimed", "tolerance"):
            if not isinstance(claim[name], (int, float)) or claim[name] < 0:
                raise ClaimsFileError(f"{where}: {name} must be a non-negative number (percent), got {claim[name]!r}")
        if claim["id"] in seen:
            raise ClaimsFileError(f"{where}: duplicate id")
        seen.add(claim["id"])
        claim["claimed"] = float(claim["claimed"])
        claim["tolerance"] = float(claim["tolerance"])
        claim.setdefault("label", f"{claim['method']} ({claim['backbone']})")
        claim["public"] = bool(claim.get("public", False))
        claim["position"] = position
        claims.append(claim)
    return claims


def sync_claims(session: Session, path: Path | None = None) -> SyncReport:
    """Upsert every claim of the YAML into the store. Running it twice changes nothing the second time."""
    report = SyncReport()
    wanted = read_claims(path)
    existing = {claim.id: claim for claim in session.scalars(select(Claim))}
    for fields in wanted:
        row = existing.pop(fields["id"], None)
        if row is None:
            session.add(Claim(**fields))
            report.added.append(fields["id"])
            continue
        changed = False
        for name, value in fields.items():
            if getattr(row, name) != value:
                setattr(row, name, value)
                changed = True
        (report.updated if changed else report.unchanged).append(fields["id"])
    report.not_in_file = sorted(existing)
    return report


def claim_ids(path: Path | None = None) -> list[str]:
    """The ids of the claims in the YAML, in file order (what a job's `claim:` may name)."""
    return [claim["id"] for claim in read_claims(path)]


_claims_synced: set[str] = set()  # store URLs this process has loaded the YAML into


def ensure_claims(engine: Engine, path: Path | None = None) -> None:
    """Load the claims YAML into the store once per process (before a run references a claim)."""
    key = f"{engine.url}|{path or ''}"
    if key in _claims_synced:
        return
    for attempt in range(3):
        try:
            with session_scope(engine) as session:
                sync_claims(session, path)
            break
        except IntegrityError:
            # Another process inserted the same claim between our read and our insert (PostgreSQL); re-read.
            if attempt == 2:
                raise
    _claims_synced.add(key)
