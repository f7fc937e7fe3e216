"""`eca export DIR`: the claims board as static files for a paper's README (no torch import).

    DIR/board.json         every claim as `eca claims --json` shows it (one function writes both), with the
                           generation time, the ecaplatform version, the paper and the rules behind the numbers
    DIR/schema.json        the JSON Schema (draft 2020-12) that board.json validates against
    DIR/badges/<id>.svg    one shields-style status badge per claim, e.g. `eca_resnet50 top-1 | 77.61 ✓ verified`

It reads the store exactly as `eca claims` does (read-only; a missing store is not created and every claim is
Unverified). The JSON writes `<`, `>` and `&` as \\u escapes, so a page may inline it in a <script> block: a
claim label cannot close it. Files are replaced atomically, so a page serving DIR never sees half a file; badges of
claims no longer exported are removed from DIR/badges. A problem (DIR is a file, cannot be written, the store) is
one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any

from ecaplatform import __version__
from ecaplatform.paper import PAPER
from ecaplatform.store.board import METRIC_NAMES, read_board
from ecaplatform.store.claims import METRICS, TASK_METRICS, ClaimsFileError
from ecaplatform.store.database import Store, StoreError
from ecaplatform.store.pipelines import PIPELINES
from ecaplatform.store.spread import SPREAD_RULE
from ecaplatform.store.verification import NOT_REPRODUCED, RUNNING, UNVERIFIED, VERIFIED

BOARD_FILE = "board.json"
SCHEMA_FILE = "schema.json"
BADGES_DIR = "badges"
SCHEMA_VERSION = 2  # 2: each claim names its task
STATUSES = (VERIFIED, NOT_REPRODUCED, UNVERIFIED, RUNNING)
VERIFICATION_RULE = (
    "A claim is verified only by a result of a succeeded run on the claim's dataset and split that covers the "
    "whole split, each sample counted exactly once, evaluated with the reference torchvision (PIL) pipeline, and "
    "at most `tolerance` points below the claimed value (better always verifies); anything else is shown, never "
    "verifying (ecaplatform/store/verification.py)."
)
# shields.io's colours: brightgreen, red, lightgrey, blue; the label side is its grey.
BADGE_COLOURS = {VERIFIED: "#4c1", NOT_REPRODUCED: "#e05d44", UNVERIFIED: "#9f9f9f", RUNNING: "#007ec6"}
LABEL_COLOUR = "#555"
# A claim id names its badge file: nothing that could leave DIR/badges or hide the file.
SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class ExportError(RuntimeError):
    """DIR cannot take the board; the message is one line saying why and what to do."""


# ------------------------------------------------------------------------------------------------- schema

_NUMBER_OR_NULL = {"type": ["number", "null"]}
_STRING_OR_NULL = {"type": ["string", "null"]}

BOARD_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://github.com/ecaplatform/ecaplatform/board.schema.json",
    "title": "ECA-Net reproduction board",
    "description": "`eca export DIR`: every claim of the paper with the platform's verdict and its evidence. "
    "Percentages as the paper prints them (77.48, not 0.7748). Each claim's badge is badges/<id>.svg.",
    "type": "object",
    "required": ["schema_version", "generated_at", "ecaplatform_version", "paper", "verification_rule",
                 "seed_spread_rule", "claims"],  # fmt: skip
    "additionalProperties": False,
    "properties": {
        "$schema": {"type": "string", "description": "this schema, relative to board.json"},
        "schema_version": {"const": SCHEMA_VERSION},
        "generated_at": {
            "type": "string",
            "format": "date-time",
            # Spelled out too: a validator without format support still checks it.
            "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$",
            "description": "UTC, RFC 3339",
        },
        "ecaplatform_version": {"type": "string"},
        "paper": {
            "type": "object",
            "required": ["title", "arxiv_id", "arxiv_url", "code_url"],
            "properties": {
                "title": {"type": "string"},
                "arxiv_id": {"type": "string"},
                "arxiv_url": {"type": "string"},
                "code_url": {"type": "string"},
            },
        },
        "verification_rule": {"type": "string"},
        "seed_spread_rule": {"type": "string"},
        "claims": {"type": "array", "items": {"$ref": "#/$defs/claim"}},
    },
    "$defs": {
        "claim": {
            "type": "object",
            "description": "One claim, exactly as `eca claims --json` prints it.",
            "additionalProperties": False,
            "required": ["id", "label", "task", "dataset", "split", "model", "metric", "claimed", "tolerance", "public",
                         "status", "verified_value", "delta", "evidence_run_id", "samples_evaluated",
                         "evidence_fingerprint", "evidence_pipeline", "seed_spread", "best_other_value",
                         "best_other_run_id", "best_other_reason"],  # fmt: skip
            "properties": {
                "id": {"type": "string", "pattern": f"^{SAFE_ID.pattern}$"},
                "label": {"type": "string"},
                "task": {"enum": list(TASK_METRICS)},
                "dataset": {"type": "string"},
                "split": {"type": "string"},
                "model": {"type": "string", "description": "registry model name"},
                "metric": {"enum": list(METRICS)},
                "claimed": {"type": "number", "description": "the paper's value, percent"},
                "tolerance": {"type": "number", "minimum": 0, "description": "points below `claimed` still verifying"},
                "public": {"type": "boolean"},
                "status": {"enum": list(STATUSES)},
                "verified_value": {**_NUMBER_OR_NULL, "description": "best qualifying measured value"},
                "delta": {**_NUMBER_OR_NULL, "description": "verified_value - claimed"},
                "evidence_run_id": {**_STRING_OR_NULL, "description": "the run of the best qualifying result"},
                "samples_evaluated": {"type": ["integer", "null"], "minimum": 0},
                "evidence_fingerprint": {
                    "description": "the evidence result's dataset fingerprint",
                    "oneOf": [
                        {"type": "null"},
                        {
                            "type": "object",
                            "required": ["dataset", "split", "num_samples", "num_classes"],
                            "properties": {
                                "dataset": {"type": "string"},
                                "split": {"type": "string"},
                                "num_samples": {"type": "integer", "minimum": 0},
                                "num_classes": {"type": "integer", "minimum": 0},
                                "hash": {"type": "string"},
                            },
                        },
                    ],
                },
                "evidence_pipeline": {
                    "description": "the input pipeline that evaluated the evidence (a result recorded before "
                    "pipelines were recorded came from torchvision and is shown so)",
                    "enum": [*PIPELINES, None],
                },
                "seed_spread": {"oneOf": [{"type": "null"}, {"$ref": "#/$defs/seed_spread"}]},
                "best_other_value": {**_NUMBER_OR_NULL, "description": "best result that does not qualify"},
                "best_other_run_id": _STRING_OR_NULL,
                "best_other_reason": {**_STRING_OR_NULL, "description": "why that result does not qualify"},
            },
            # A verdict on a measurement names it, its evidence and its spread; no measurement, none of them.
            "if": {"properties": {"status": {"enum": [VERIFIED, NOT_REPRODUCED]}}},
            "then": {
                "properties": {
                    "verified_value": {"type": "number"},
                    "delta": {"type": "number"},
                    "evidence_run_id": {"type": "string"},
                    "evidence_fingerprint": {"type": "object"},
                    "seed_spread": {"type": "object"},
                }
            },
            "else": {
                "properties": {
                    "verified_value": {"type": "null"},
                    "evidence_run_id": {"type": "null"},
                    "seed_spread": {"type": "null"},
                }
            },
        },
        "seed_spread": {
            "type": "object",
            "description": "n, mean, sample standard deviation, min and max of the qualifying results of the "
            "evidence's recipe group (ecaplatform/store/spread.py)",
            "additionalProperties": False,
            "required": ["n", "mean", "std", "min", "max", "run_ids", "seeds", "recipe_key"],
            "properties": {
                "n": {"type": "integer", "minimum": 1},
                "mean": {"type": "number"},
                "std": {**_NUMBER_OR_NULL, "description": "null for n = 1"},
                "min": {"type": "number"},
                "max": {"type": "number"},
                "run_ids": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "seeds": {"type": "array", "description": "each run's seed as recorded (seed_everything)"},
                "recipe_key": {**_STRING_OR_NULL, "description": "sha256 of the recipe; null: a group of one"},
            },
        },
    },
}


# ------------------------------------------------------------------------------------------------- badges

# Verdana 11 px advance widths (what shields measures with), rounded; anything unlisted counts as a wide letter.
_NARROW = dict.fromkeys("ijl'|", 3.1) | dict.fromkeys(" .,:;!()[]", 3.9) | dict.fromkeys("frt-", 4.7)
_WIDE = dict.fromkeys("mwMW", 10.0) | dict.fromkeys("✓✗±", 8.0)


def _text_width(text: str) -> float:
    return sum(_NARROW.get(c) or _WIDE.get(c) or (7.6 if c.isupper() else 7.0 if c.isdigit() else 6.6) for c in text)


_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml_text(text: str) -> str:
    # Characters XML 1.0 forbids even escaped are dropped; the rest is escaped for text and attributes alike.
    return escape(_XML_INVALID.sub("", text), quote=True)


def badge_text(record: dict[str, Any]) -> tuple[str, str]:
    """The badge's label and value for one claim record: `eca_resnet50 top-1`, `77.61 ✓ verified`."""
    label = f"{record['model']} {METRIC_NAMES.get(record['metric'], record['metric'])}"
    status, value = record["status"], record["verified_value"]
    if status == VERIFIED:
        return label, f"{value:.2f} ✓ verified"
    if status == NOT_REPRODUCED:
        return label, f"{value:.2f} ✗ not reproduced"
    return label, status.lower()


def badge_svg(label: str, value: str, colour: str) -> str:
    """A flat shields-style badge: grey label, coloured value, text with a 1 px shadow."""
    pad = 6.0
    label_w = round(_text_width(label) + 2 * pad)
    value_w = round(_text_width(value) + 2 * pad)
    width = label_w + value_w
    title = _xml_text(f"{label}: {value}")

    def text(x: float, content: str) -> str:
        length = round(_text_width(content))  # pin the width: another font must not overflow the box
        common = f'x="{x:.1f}" textLength="{length}" lengthAdjust="spacingAndGlyphs"'
        return (f'<text {common} y="15" fill="#010101" fill-opacity=".3">{_xml_text(content)}</text>'
                f'<text {common} y="14">{_xml_text(content)}</text>')  # fmt: skip

    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" viewBox="0 0 {width} 20" '
        f'role="img" aria-label="{title}"><title>{title}</title>'
        '<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/>'
        '<stop offset="1" stop-opacity=".1"/></linearGradient>'
        f'<clipPath id="r"><rect width="{width}" height="20" rx="3" fill="#fff"/></clipPath>'
        f'<g clip-path="url(#r)"><rect width="{label_w}" height="20" fill="{LABEL_COLOUR}"/>'
        f'<rect x="{label_w}" width="{value_w}" height="20" fill="{colour}"/>'
        f'<rect width="{width}" height="20" fill="url(#s)"/></g>'
        '<g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="11">'
        f"{text(label_w / 2, label)}{text(label_w + value_w / 2, value)}</g></svg>\n"
    )


def claim_badge(record: dict[str, Any]) -> str:
    label, value = badge_text(record)
    return badge_svg(label, value, BADGE_COLOURS.get(record["status"], BADGE_COLOURS[UNVERIFIED]))


# ------------------------------------------------------------------------------------------------- writing


def _prepare(folder: Path) -> Path:
    if folder.exists() and not folder.is_dir():
        raise ExportError(f"{folder} is a file, not a folder; name a folder (it is created if missing)")
    try:
        (folder / BADGES_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create {folder / BADGES_DIR}: {exc.strerror or exc}") from exc
    for path in (folder, folder / BADGES_DIR):
        if not os.access(path, os.W_OK | os.X_OK):  # before reading the store: say so at once
            raise ExportError(f"cannot write to {path}: permission denied")
    return folder


def _write(path: Path, text: str) -> None:
    """Replace `path` atomically: a reader sees the old file or the new one, never half of one."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
            os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the board from a web server
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from exc


# Outside strings JSON has none of these characters, so escaping them everywhere keeps it valid and equal.
_SCRIPT_UNSAFE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


def script_safe_json(data: Any) -> str:
    """`data` as indented JSON that is safe inside an HTML <script> block (no `<`, `>` or `&` left)."""
    return json.dumps(data, indent=2, ensure_ascii=False).translate(_SCRIPT_UNSAFE) + "\n"


def build_board(records: Sequence[dict[str, Any]], *, now: datetime | None = None) -> dict[str, Any]:
    return {
        "$schema": SCHEMA_FILE,
        "schema_version": SCHEMA_VERSION,
        "generated_at": (now or datetime.now(timezone.utc)).isoformat(timespec="seconds"),
        "ecaplatform_version": __version__,
        "paper": {"title": PAPER.title, "arxiv_id": PAPER.arxiv_id, "arxiv_url": PAPER.arxiv_url,
                  "code_url": PAPER.code_url},  # fmt: skip
        "verification_rule": VERIFICATION_RULE,
        "seed_spread_rule": SPREAD_RULE,
        "claims": list(records),
    }


def export_board(folder: Path, records: Sequence[dict[str, Any]]) -> list[Path]:
    """Write board.json, schema.json and one badge per claim record into `folder`; the paths written."""
    for record in records:
        if not SAFE_ID.fullmatch(record["id"]):
            raise ExportError(f"claim id {record['id']!r} cannot name a badge file (letters, digits, . _ - only); "
                              "rename it in the claims file")  # fmt: skip
    _prepare(folder)
    written = []
    for record in records:
        path = folder / BADGES_DIR / f"{record['id']}.svg"
        _write(path, claim_badge(record))
        written.append(path)
    keep = {path.name for path in written}
    for stale in (folder / BADGES_DIR).glob("*.svg"):  # a claim no longer exported must not keep its old badge
        if stale.name not in keep:
            stale.unlink(missing_ok=True)
    _write(folder / SCHEMA_FILE, script_safe_json(BOARD_SCHEMA))
    _write(folder / BOARD_FILE, script_safe_json(build_board(records)))
    return [folder / BOARD_FILE, folder / SCHEMA_FILE, *written]


def export_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="eca export",
        description="Write the claims board as static files for a README: DIR/board.json, DIR/schema.json and "
        "DIR/badges/<claim id>.svg. Reads the store like `eca claims`; never writes it.",
    )
    parser.add_argument("dir", metavar="DIR", type=Path, help="the folder to write (created if missing)")
    parser.add_argument("--public", action="store_true", help="only the claims the public leaderboard page lists")
    parser.add_argument("--model", help="only claims about this registry model, e.g. eca_resnet50")
    args = parser.parse_args(argv)

    try:
        _prepare(args.dir)  # a folder we cannot write fails before the store is read
        records = [row.record() for row in read_board(Store.from_env(), public=args.public, model=args.model).rows]
        written = export_board(args.dir, records)
    except (ExportError, StoreError, ClaimsFileError) as exc:
        print(f"eca export: {exc}", file=sys.stderr)
        return 1
    counts = {status: sum(r["status"] == status for r in records) for status in STATUSES}
    summary = ", ".join(f"{count} {status.lower()}" for status, count in counts.items() if count)
    print(f"wrote {args.dir / BOARD_FILE}, {args.dir / SCHEMA_FILE} and {len(written) - 2} badges in "
          f"{args.dir / BADGES_DIR} ({len(records)} claims: {summary or 'none'})")  # fmt: skip
    return 0
