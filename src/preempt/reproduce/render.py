"""A table's finished runs as Markdown and LaTeX, ours beside the paper's, and its figures.

Each cell is the mean ± sample std over the cell's runs (one per seed), shown beside the published number. A
cell with fewer finished runs than seeds is shown as missing, never as a mean of what happened to finish. The
claim column says whether the paper's qualitative claim for that row holds in our means.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from preempt.reproduce.tables import Column, Condition, Row, Scale, Table

CLAIM_HEADER = "paper's claim holds"


@dataclass(frozen=True)
class Stat:
    """A cell over its runs, in the column's shown unit: the values of the `runs` that finished (a run may not
    log the metric: no attack has no success rate), of the `expected` runs asked for."""

    values: tuple[float, ...]
    expected: int
    runs: int | None = None

    @property
    def complete(self) -> bool:
        return (len(self.values) if self.runs is None else self.runs) == self.expected

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0


def metric_of(row: Row, column: Column) -> list[str]:
    metric = row.metrics.get(column.key, column.metric)
    return [metric] if isinstance(metric, str) else list(metric)


def shown(value: float, column: Column) -> float:
    return 100 * value if column.unit == "percent" else value


def cell_stat(results: list[dict], row: Row, column: Column, expected: int) -> Stat:
    """The column's value in each run that logged every metric it sums."""
    metrics = metric_of(row, column)
    values = [
        shown(sum(result["metrics"][key] for key in metrics), column)
        for result in results
        if all(key in result["metrics"] for key in metrics)
    ]
    return Stat(tuple(values), expected, runs=len(results))


def fmt(value: float, column: Column) -> str:
    if column.unit == "percent":
        return f"{value:.1f}"
    if column.unit == "seconds":  # two significant digits; what no defense takes (a few µs of bookkeeping) is 0
        return "0" if abs(value) < 1e-4 else f"{value:.2g}" if abs(value) < 10 else f"{value:.0f}"
    return f"{value:.3f}"


def ours(stat: Stat | None, column: Column) -> str:
    if stat is None or (stat.complete and not stat.values):
        return "—"
    if not stat.complete:
        return f"— ({stat.runs}/{stat.expected} runs)"
    if len(stat.values) == 1:
        return fmt(stat.mean, column)
    return f"{fmt(stat.mean, column)} ± {fmt(stat.std, column)}"


def paper(row: Row, column: Column) -> str:
    value = row.paper.get(column.key)
    if value is None:
        return "—"
    return fmt(value, column) if isinstance(value, int | float) else str(value)


def reference_value(reference: str | float, stats: dict[tuple[str, str], Stat]) -> float | None:
    if not isinstance(reference, str):
        return float(reference)
    row, _, column = reference.partition(".")
    stat = stats.get((row, column))
    return stat.mean if stat is not None and stat.complete and stat.values else None


def condition_holds(condition: Condition, owner: str, rows: list[str], stats: dict) -> bool | None:
    """True or False over complete cells; None when a cell it needs is missing. `rows`: the rows of this scale."""
    if condition.best is not None or condition.lowest is not None:
        column = condition.best or condition.lowest
        ranked = [row for row in condition.among or rows if row in rows]
        values = [reference_value(f"{row}.{column}", stats) for row in ranked]
        mine = reference_value(f"{owner}.{column}", stats)
        if mine is None or None in values:
            return None
        return mine >= max(values) if condition.best is not None else mine <= min(values)
    values = [reference_value(reference, stats) for reference in condition.references()]
    if None in values:
        return None
    factor = condition.factor or 1.0
    if condition.greater is not None:
        return values[0] > factor * values[1]
    if condition.less is not None:
        return factor * values[0] < values[1]
    if condition.closer is not None:
        return abs(values[0] - values[2]) < abs(values[1] - values[2])
    return abs(values[0] - values[1]) <= condition.within[2]


def checked_here(condition: Condition, rows: list[str], scale: Scale) -> bool:
    """Whether the condition is tested at this scale: its scales include it, and a comparison of two cells has
    both rows here (a ranking drops the rows this scale does not run, and says so)."""
    if condition.scales is not None and scale not in condition.scales:
        return False
    ranking = condition.best is not None or condition.lowest is not None
    return ranking or all(row in rows for row in condition.rows())


def claim_verdict(row: Row, rows: list[str], stats: dict, scale: Scale) -> str:
    """yes, no, or missing runs, over the conditions tested at this scale; what is left out is said after it."""
    if row.claim is None:
        return ""
    conditions = row.claim.holds
    tested = [condition for condition in conditions if checked_here(condition, rows, scale)]
    if not tested:
        return "— (not checked at this scale)"
    verdicts = [condition_holds(condition, row.key, rows, stats) for condition in tested]
    verdict = "no" if False in verdicts else "yes" if None not in verdicts else "— (missing runs)"
    absent = sorted({name for condition in tested for name in condition.rows() if name not in rows})
    notes = []
    if len(tested) < len(conditions):
        notes.append(f"{len(tested)} of {len(conditions)} checks at this scale")
    if absent:
        notes.append(f"ranked without {', '.join(absent)}, not run at this scale")
    return verdict + (f" ({'; '.join(notes)})" if notes else "")


def row_images(results: list[dict]) -> str:
    """runs × images per run (a range when the runs differ)."""
    if not results:
        return "0"
    sizes = sorted({result["run"]["n_samples"] for result in results})
    per_run = str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}–{sizes[-1]}"
    return f"{len(results)}×{per_run}"


@dataclass
class Rendered:
    """A table's cells and verdicts, ready to write in either format."""

    table: Table
    scale: Scale
    rows: list[Row]
    stats: dict[tuple[str, str], Stat]
    images: dict[str, str]
    verdicts: dict[str, str]
    devices: list[str]

    @property
    def complete(self) -> bool:
        return all(stat.complete for stat in self.stats.values())


def build(table: Table, scale: Scale, results: dict[tuple[str, str], list[dict]]) -> Rendered:
    """`results[(row, run)]`: the finished runs of each cell."""
    rows = table.rows_at(scale)
    expected = len(table.seeds[scale])
    stats = {
        (row.key, column.key): cell_stat(results.get((row.key, column.run), []), row, column, expected)
        for row in rows
        for column in table.columns
        if column.run in table.runs_of(row)
    }
    keys = [row.key for row in rows]
    verdicts = {row.key: claim_verdict(row, keys, stats, scale) for row in rows}
    images = {row.key: row_images(results.get((row.key, table.runs_of(row)[0]), [])) for row in rows}
    devices = sorted({result["run"]["device"] for runs in results.values() for result in runs})
    return Rendered(table, scale, rows, stats, images, verdicts, devices)


def row_cells(rendered: Rendered, row: Row) -> list[str]:
    """The row's name, each column as `ours (paper)`, its run and image count, and the claim's verdict."""
    cells = [
        f"{ours(rendered.stats.get((row.key, column.key)), column)} ({paper(row, column)})"
        for column in rendered.table.columns
    ]
    return [row.name, *cells, rendered.images[row.key], rendered.verdicts[row.key]]


def markdown(rendered: Rendered) -> str:
    table = rendered.table
    header = ["", *(column.header for column in table.columns), "n (runs×images)", CLAIM_HEADER]
    lines = [
        f"### {table.title}",
        "",
        f"Ours: mean ± std over seeds {', '.join(map(str, table.seeds[rendered.scale]))} at scale "
        f"`{rendered.scale}`; the paper's number in brackets ({table.source}). "
        f"Device: {', '.join(rendered.devices) or 'none yet'}.",
    ]
    if note := table.notes.get(rendered.scale):
        lines += ["", note.strip()]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rendered.rows:
        lines.append("| " + " | ".join(row_cells(rendered, row)) + " |")
    claims = [row for row in rendered.rows if row.claim is not None]
    if claims:
        lines += ["", "Claims checked:"]
        lines += [f"- {row.name}: {row.claim.says} — **{rendered.verdicts[row.key]}**" for row in claims]
    if not rendered.complete:
        lines += ["", "**Incomplete**: cells marked — have runs missing; run `make reproduce-tables` again."]
    return "\n".join(lines) + "\n"


LATEX_ESCAPES = {"\\": r"\textbackslash{}", "%": r"\%", "&": r"\&", "_": r"\_", "#": r"\#", "$": r"\$"}


def latex_text(text: str) -> str:
    escaped = "".join(LATEX_ESCAPES.get(character, character) for character in text)
    return escaped.replace("±", r"$\pm$").replace("—", "---").replace("×", r"$\times$").replace("–", "--")


def latex(rendered: Rendered) -> str:
    table = rendered.table
    header = ["", *(column.header for column in table.columns), "n", "claim"]
    lines = [
        f"% {table.title} | scale {rendered.scale} | {table.source} | made by make reproduce-tables",
        r"\begin{table}[t]",
        r"\centering",
        r"\caption{" + latex_text(f"{table.title}. Ours: mean ± std over seeds; the paper's in brackets.") + "}",
        r"\begin{tabular}{l" + "c" * (len(header) - 1) + "}",
        r"\toprule",
        " & ".join(latex_text(cell) for cell in header) + r" \\",
        r"\midrule",
    ]
    for row in rendered.rows:
        lines.append(" & ".join(latex_text(cell) for cell in row_cells(rendered, row)) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def plot_bars(rendered: Rendered, columns: list[str], title: str, out: Path) -> Path:
    """A panel per column: a bar per row (our mean, std as error bar), the paper's number as a black mark."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_key = {column.key: column for column in rendered.table.columns}
    figure, axes = plt.subplots(1, len(columns), figsize=(4.5 * len(columns), 3.8), squeeze=False)
    names = [row.name for row in rendered.rows]
    for axis, key in zip(axes[0], columns, strict=True):
        column = by_key[key]
        stats = [rendered.stats.get((row.key, key)) for row in rendered.rows]
        shown_stats = [stat if stat is not None and stat.complete and stat.values else None for stat in stats]
        means = [stat.mean if stat else float("nan") for stat in shown_stats]
        errors = [stat.std if stat else 0.0 for stat in shown_stats]
        axis.bar(range(len(names)), means, yerr=errors, capsize=3, color="C0", label="ours")
        published = [row.paper.get(key) for row in rendered.rows]
        marks = [(index, value) for index, value in enumerate(published) if isinstance(value, int | float)]
        if marks:
            axis.scatter(*zip(*marks, strict=True), color="black", marker="_", s=300, zorder=3, label="paper")
        axis.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=8)
        axis.set(title=column.header, ylabel=column.header)
        axis.grid(axis="y", alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(f"{title} (scale {rendered.scale})")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out
