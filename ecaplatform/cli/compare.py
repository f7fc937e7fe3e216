"""`eca compare RUN_A RUN_B`: two evaluations of the same images, image by image (ecaplatform.store.comparison)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from ecaplatform.cli.text_table import text_table
from ecaplatform.store.comparison import (
    DEFAULT_RESAMPLES,
    SHOWN_CLASSES,
    ComparedResult,
    ComparisonError,
    ResultComparison,
    compare_results,
    describe_fingerprint,
    fmt_p,
    newest_val_result,
)
from ecaplatform.store.database import Store, StoreError, has_tables, session_scope

# How each side's result was chosen (`chosen` below: one per side).
NEWEST_VAL = "the run's newest val result"
GIVEN = "given by id"


def report_text(comparison: ResultComparison, chosen: Sequence[str]) -> str:
    """The text report of `eca compare`: which results, both top-1s, B - A with its interval, McNemar, classes."""
    s, a, b = comparison.stats, comparison.a, comparison.b
    lines = [
        f"{label}: run {side.run_id} ({side.model_name}), result {side.result_id} ({how})"
        for label, side, how in (("A", a, chosen[0]), ("B", b, chosen[1]))
    ]
    lines += [
        f"same images: {describe_fingerprint(a.fingerprint)}",
        "",
        f"top-1 A   {s.top1_a:.2f}%",
        f"top-1 B   {s.top1_b:.2f}%",
        f"B - A     {s.diff:+.2f} points, 95% interval [{s.ci_low:+.2f}, {s.ci_high:+.2f}] "
        f"(paired bootstrap over images, {s.resamples:,} resamples)",
        f"McNemar   p = {fmt_p(s.p_value)} (exact, two-sided, on the {s.discordant:,} discordant images)",
        f"images    {s.b_only:,} only B right, {s.a_only:,} only A right, {s.both_right:,} both right, "
        f"{s.both_wrong:,} both wrong",
    ]
    if s.discordant == 0:
        lines += ["", f"No image differs: A and B are right at top-1 on the same {s.both_right:,} images."]
    elif comparison.classes:  # classes where A and B differ (none: --classes 0, or differences cancel per class)
        rows = [[c.label, f"{c.images:,}", f"{c.acc_a:.1f}", f"{c.acc_b:.1f}", f"{c.diff:+.1f}"]
                for c in comparison.classes]  # fmt: skip
        where = "class" if len(rows) == 1 else f"{len(rows)} classes"
        lines += ["", f"The {where} where they differ most (top-1 %):"]
        lines.append(text_table(["Class", "Images", "A", "B", "B - A"], rows, right=range(1, 5)))
    return "\n".join(lines)


def _side_json(side: ComparedResult, chosen: str) -> dict[str, Any]:
    # without its class names (a thousand for ImageNet): the classes listed carry theirs
    return {key: value for key, value in asdict(side).items() if key != "class_names"} | {"chosen": chosen}


def report_json(comparison: ResultComparison, chosen: Sequence[str]) -> dict[str, Any]:
    s = comparison.stats
    return {
        "a": _side_json(comparison.a, chosen[0]),
        "b": _side_json(comparison.b, chosen[1]),
        "n": s.n, "top1_a": s.top1_a, "top1_b": s.top1_b, "diff": s.diff,
        "ci95": [s.ci_low, s.ci_high], "mcnemar_p": s.p_value,
        "b_only": s.b_only, "a_only": s.a_only, "both_right": s.both_right, "both_wrong": s.both_wrong,
        "resamples": s.resamples, "seed": s.seed,
        "classes": [{**asdict(c), "diff": c.diff} for c in comparison.classes],
    }  # fmt: skip


def compare_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="eca compare",
        description="Two evaluations of the same images, image by image: B - A in top-1 with a 95% paired bootstrap "
        "interval, McNemar's exact p and the classes that differ most. Each run's newest val result is used.",
    )
    parser.add_argument("a", metavar="RUN_A", help="run id (with --result: result id) of A, the reference")
    parser.add_argument("b", metavar="RUN_B", help="run id (with --result: result id) of B; the difference is B - A")
    parser.add_argument("--result", action="store_true",
                        help="RUN_A and RUN_B are result ids (as `eca runs --show RUN` lists them), not run ids")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES, help="bootstrap resamples (default 10000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--classes", type=int, default=SHOWN_CLASSES, help="classes to list (default 5)")
    args = parser.parse_args(argv)
    if args.resamples < 1 or args.classes < 0:
        parser.error("--resamples must be positive and --classes not negative")
    if args.result:
        try:
            ids = [int(args.a), int(args.b)]
        except ValueError:
            parser.error(f"with --result, RUN_A and RUN_B are result ids (numbers), got {args.a!r} and {args.b!r}")

    try:
        engine = Store.from_env().open_reader()  # read-only, never creates or migrates: as `eca runs`
        try:
            if not has_tables(engine):  # a database nobody has migrated: nothing recorded (older: SchemaBehind)
                what = "result" if args.result else "run"
                raise ComparisonError(f"no {what} with id {args.a!r}: the store has no runs yet")
            with session_scope(engine) as session:
                if args.result:
                    chosen = [GIVEN] * 2
                else:
                    ids = [newest_val_result(session, args.a), newest_val_result(session, args.b)]
                    chosen = [NEWEST_VAL] * 2
                comparison = compare_results(session, ids[0], ids[1], resamples=args.resamples, seed=args.seed,
                                             classes=args.classes)  # fmt: skip
        finally:
            engine.dispose()
    except (StoreError, ComparisonError) as exc:
        print(f"eca compare: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report_json(comparison, chosen), indent=2, default=str))
    else:
        print(report_text(comparison, chosen))
    return 0
