"""The short report.md of a run and the summary printed on the terminal."""

from __future__ import annotations

from typing import Any

from cream.run_dir import RunDir


def format_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def summary_table(summary: dict[str, Any]) -> str:
    """A two-column plain-text table of a summary (scalars only)."""
    rows = [(k, format_value(v)) for k, v in summary.items() if not isinstance(v, (dict, list))]
    width = max((len(k) for k, _ in rows), default=0)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def write_report(run: RunDir, summary: dict[str, Any], sections: list[str] | None = None) -> None:
    """report.md: the summary as a Markdown table, then any extra sections (plots, tables)."""
    lines = [f"# Run report: {run.path.name}", "", "| key | value |", "|---|---|"]
    lines += [f"| {k} | {format_value(v)} |" for k, v in summary.items() if not isinstance(v, (dict, list))]
    for section in sections or []:
        lines += ["", section]
    run.write_text("report.md", "\n".join(lines) + "\n")
