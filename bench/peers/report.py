"""Figures out of a peers run: the rows ``python -m bench`` prints, the verdict on each target of
issue 10, ``bench/results-peers.md`` and one PNG bar chart per operation."""

from __future__ import annotations

import importlib
import re
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.peers import runner
from bench.peers.runner import BASELINE, PeersRun
from bench.timing import median_and_spread, paired_ratio

SYNC_RAW, ASYNC_RAW = "psycopg (raw)", "asyncpg pool (raw)"
COLUMNS = [
    BASELINE,
    "SQLAlchemy ORM",
    "SQLAlchemy Core",
    "Django",
    "peewee",
    "Tortoise",
    "Piccolo",
    "advanced-alchemy",
    "raw driver",
]
#: (operation, peer, how many times faster than the peer dalkit must be), from issue 10
TARGETS = [
    *(
        (op, peer, 1.0)
        for op in (runner.GET_A, runner.PAGE_A, runner.INSERT_A, runner.TASKS_A)
        for peer in ("Tortoise", "Piccolo")
    ),
    *((op, "Django", 1.0) for op in (runner.GET_S, runner.PAGE_S)),
    *((op, "SQLAlchemy ORM", 1.5) for op in (runner.GET_S, runner.PAGE_S)),
    (runner.INSERT_S, "SQLAlchemy ORM", 1.0),
    (runner.BULK_A, ASYNC_RAW, 0.9),
    (runner.BULK_S, SYNC_RAW, 0.95),
]


NOT_TIMED = [
    "loads through Django (`bulk_create`) and peewee (`insert_many` in `chunked` batches): a few "
    "thousand rows/s here, 25 s or more per 100,000-row load; not timed, to keep the run within "
    "its 6 minutes",
    "loads through SQLAlchemy Core: the same `executemany` path as the ORM bulk INSERT timed here",
    "statements of the 32-task operation and of loads: not counted (the same requests as get by "
    "id; a load's statement count is its chunking)",
]


def rows(run: PeersRun) -> list[dict[str, Any]]:
    """One row per operation and variant, in ``python -m bench``'s shape, plus the statements."""
    out = []
    for op in runner.OPERATIONS:
        variants = run.samples.get(op, {})
        base = variants.get(BASELINE)
        for label, samples in variants.items():
            ops, spread = _median(samples)
            row: dict[str, Any] = {
                "name": f"{op}: {label}",
                "operation": op,
                "variant": label,
                "ops_per_s": ops,
                "spread_pct": spread,
                "baseline": None,
                "samples": samples,
                "cpu_us": _median(run.cpu_us.get(op, {}).get(label) or [0.0])[0] or None,
                "statements": run.statements.get((op, label)),
            }
            if base is not None and label != BASELINE:
                ratio, ratio_spread = _paired(samples, base)
                row.update(baseline=f"{op}: {BASELINE}", ratio=ratio, ratio_spread_pct=ratio_spread)
            out.append(row)
    return out


def targets(found: Sequence[Mapping[str, Any]]) -> list[str]:
    """A line per target: dalkit's lead over the peer (median of per-repeat ratios) and whether
    it is met; a verdict closer to the line than half the ratio's spread is not decisive."""
    by_name = {row["name"]: row for row in found}
    lines = []
    for op, peer, needed in TARGETS:
        ours, theirs = by_name.get(f"{op}: {BASELINE}"), by_name.get(f"{op}: {peer}")
        if ours is None or theirs is None:
            lines.append(f"- {op}: dalkit >= {needed:g}x {peer}: not measured")
            continue
        lead, spread = _paired(ours["samples"], theirs["samples"])
        verdict = "**met**" if lead >= needed else "**missed**"
        close = spread is not None and abs(lead / needed - 1) * 100 < spread / 2
        lines.append(
            f"- {op}: dalkit runs at {lead:.2f}x {peer} (ratio spread {_pct(spread)}), target "
            f">= {needed:g}x: {verdict}{' (inside the spread: not decisive)' if close else ''}"
        )
    floor = by_name.get(f"{runner.INSERT_A}: {runner.IN_TRANSACTION}")
    for peer in ("Tortoise", "Piccolo"):
        theirs = by_name.get(f"{runner.INSERT_A}: {peer}")
        if floor is not None and theirs is not None:
            lead, spread = _paired(floor["samples"], theirs["samples"])
            lines.append(
                f"- {runner.INSERT_A}: the raw driver itself, in BEGIN ... COMMIT as a write "
                f"transaction must be, runs at {lead:.2f}x {peer} (ratio spread {_pct(spread)}): "
                "the ceiling of any transactional insert against the peer's autocommit one"
            )
    for op in (runner.GET_S, runner.GET_A, runner.PAGE_S, runner.PAGE_A):
        sent = by_name.get(f"{op}: {BASELINE}", {}).get("statements")
        verdict = "**met**" if sent == ["SELECT"] else "**missed**"
        lines.append(f"- {op}: one statement per read-only request: {verdict} ({_kinds(sent)})")
    for op in (runner.INSERT_S, runner.INSERT_A):
        sent = by_name.get(f"{op}: {BASELINE}", {}).get("statements")
        verdict = "**met**" if sent == ["BEGIN", "INSERT", "COMMIT"] else "**missed**"
        lines.append(
            f"- {op}: BEGIN, the INSERT, COMMIT and nothing else: {verdict} ({_kinds(sent)})"
        )
    return lines


def write(run: PeersRun, found: Sequence[Mapping[str, Any]], path: Path, header: str) -> None:
    charts = path.parent / "charts"
    charts.mkdir(exist_ok=True)
    by_op: dict[str, list[Mapping[str, Any]]] = {}
    for row in found:
        by_op.setdefault(row["operation"], []).append(row)
    parts = [header, "## Ops/s [ratio to dalkit's default way]\n", _matrix(by_op), ""]
    parts.append("## Targets of issue 10\n")
    parts += targets(found)
    parts.append("\n## Each operation\n")
    for op, op_rows in by_op.items():
        chart = charts / f"peers-{_slug(op)}.png"
        _chart(op, op_rows, chart)
        parts += [f"### {op}\n", _detail(op_rows), f"\n![{op}](charts/{chart.name})\n"]
    parts.append("## How each peer is used\n")
    parts += _usage()
    parts.append("\n## Left out\n")
    parts += [f"- {key}: {reason}" for key, reason in sorted(run.left_out.items())]
    parts += [f"- {note}" for note in NOT_TIMED]
    if run.counting_skipped:
        parts.append(f"- statement counts: {run.counting_skipped}")
    path.write_text("\n".join(parts) + "\n")


def _usage() -> list[str]:
    """Each peer module's own account of how it uses its library."""
    lines = []
    for name in dict.fromkeys(module for module, _ in runner.SYNC_PEERS + runner.ASYNC_PEERS):
        try:
            module = importlib.import_module(f"bench.peers.{name}")
        except ImportError:
            continue
        doc = " ".join((module.__doc__ or "").split())
        lines.append(f"- `bench/peers/{name}.py`: {doc}")
    return lines


def _matrix(by_op: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    lines = [
        "| operation | " + " | ".join(COLUMNS) + " |",
        "|---|" + "---:|" * len(COLUMNS),
    ]
    for op, op_rows in by_op.items():
        cells = {row["variant"]: row for row in op_rows}
        out = []
        for column in COLUMNS:
            row = cells.get(column)
            if column == "raw driver":
                row = cells.get(SYNC_RAW) or cells.get(ASYNC_RAW)
            if row is None:
                out.append("—")
                continue
            ratio = row.get("ratio")
            text = f"{row['ops_per_s']:,.0f}"
            out.append(text if ratio is None else f"{text} [{ratio:.2f}x]")
        lines.append(f"| {op} | " + " | ".join(out) + " |")
    return "\n".join(lines)


def _detail(op_rows: Sequence[Mapping[str, Any]]) -> str:
    lines = [
        "| variant | ops/s | spread | ratio to dalkit | ratio spread | CPU µs/request "
        "| statements/op | statements |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in sorted(op_rows, key=lambda r: -r["ops_per_s"]):
        ratio = row.get("ratio")
        sent = row.get("statements")
        lines.append(
            f"| {row['variant']} | {row['ops_per_s']:,.0f} | {_pct(row['spread_pct'])} "
            f"| {'1 (baseline)' if row['variant'] == BASELINE else _num(ratio)} "
            f"| {'' if ratio is None else _pct(row.get('ratio_spread_pct'))} "
            f"| {'—' if row.get('cpu_us') is None else format(row['cpu_us'], ',.0f')} "
            f"| {'—' if sent is None else len(sent)} | {'—' if sent is None else _kinds(sent)} |"
        )
    return "\n".join(lines)


def _chart(op: str, op_rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import StrMethodFormatter

    ordered = sorted(op_rows, key=lambda r: r["ops_per_s"])
    labels = [row["variant"] for row in ordered]
    medians = [row["ops_per_s"] for row in ordered]
    low, high = [], []
    for row in ordered:
        samples = row["samples"]
        quartiles = statistics.quantiles(samples, n=4) if len(samples) > 1 else [medians[0]] * 3
        q1, q3 = (quartiles[0], quartiles[2]) if len(samples) > 1 else (row["ops_per_s"],) * 2
        low.append(max(0.0, row["ops_per_s"] - q1))
        high.append(max(0.0, q3 - row["ops_per_s"]))
    colours = ["#d62728" if label == BASELINE else "#1f77b4" for label in labels]
    figure, axes = plt.subplots(figsize=(8, 0.45 * len(labels) + 1.4))
    axes.barh(labels, medians, xerr=[low, high], color=colours, capsize=3)
    for y, row in enumerate(ordered):
        ratio = row.get("ratio")
        note = f"{row['ops_per_s']:,.0f}" + ("" if ratio is None else f"  [{ratio:.2f}x]")
        # right of the error bar, so that the figure never sits under it
        axes.text(row["ops_per_s"] + high[y], y, "  " + note, va="center", fontsize=8)
    unit = "rows/s, median of the loads" if "bulk" in op else "ops/s, median of the batches"
    axes.set_xlabel(f"{unit} (bars: interquartile range)")
    axes.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    axes.set_title(f"{op} [ratio to dalkit default]", fontsize=10)
    axes.set_xlim(0, max(m + h for m, h in zip(medians, high, strict=True)) * 1.4)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _median(samples: Sequence[float]) -> tuple[float, float | None]:
    if len(samples) < 2:
        return samples[0], None
    return median_and_spread(samples)


def _paired(samples: Sequence[float], base: Sequence[float]) -> tuple[float, float | None]:
    # loaders that ran once pair with the first round only, the round they shared
    n = min(len(samples), len(base))
    if n < 2:
        return samples[0] / base[0], None
    return paired_ratio(samples[:n], base[:n])


def _kinds(sent: Sequence[str] | None) -> str:
    return "not counted" if sent is None else ", ".join(sent)


def _pct(value: float | None) -> str:
    return "one run" if value is None else f"{value:.1f}%"


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _slug(op: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", op.lower()).strip("-")
