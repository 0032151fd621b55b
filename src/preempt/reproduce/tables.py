"""A paper's table as data: `sweeps/tables/<name>.yaml` names its experiment preset, its rows and the runs its
columns draw from (Hydra overrides, per scale), the published numbers, and the paper's claim per row.

A cell is one row under one named run; it runs over the scale's seeds as one Hydra multirun. Everything about a
table is checked when its file is read, so a typo fails before any run starts, naming the file and the key. A table
file may come from someone else: its overrides pick the project's options and settings, and cannot name what gets
built (`_target_`), set Hydra's own config (`hydra.*`: where configs are found, callbacks Hydra runs, the job's
environment, which could widen PREEMPT_TRUSTED_MODULES), or load a config file from outside conf/.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from preempt.config import CONF_DIR, project_root

TABLES_DIR = Path(project_root()) / "sweeps" / "tables"
SCALES = ("quick", "imagenet_lite", "paper")
Scale = Literal["quick", "imagenet_lite", "paper"]
# The scales a table runs at unless it names its own: imagenet_lite is opt-in (a table sets its cells there).
DEFAULT_SCALES = ["quick", "paper"]
# An override's key: what it sets (`attack`, `defense.n_samples`, `+x`); a cell may set each key once.
OVERRIDE_KEY = re.compile(r"^[+~]{0,2}([\w./@-]+)=")


def check_override(override: str) -> None:
    """One override of a table file: `key=value`, picking options and settings of the project's own configs."""
    match = OVERRIDE_KEY.match(override)
    if match is None:
        raise ValueError(f"{override!r} is not a Hydra override: write key=value, e.g. defense=none or attack.steps=10")
    if "_target_" in override:
        raise ValueError(
            f"{override!r} sets a _target_ (what gets built): a table picks the project's options, e.g. "
            f"classifier=digits_cnn, and their settings"
        )
    key = match.group(1)
    if any(part == "hydra" or part.startswith(("hydra.", "hydra/")) for part in key.split("@")):
        raise ValueError(
            f"{override!r} sets Hydra's own config (where configs are found, the callbacks it runs, the job's "
            f"environment): a table sets only the run's config; leave hydra.* to the command line"
        )
    group = key.partition("@")[0].strip("/")
    option = Path(override.split("=", 1)[1].strip("'\"[] "))
    if (CONF_DIR / group).is_dir() and (option.is_absolute() or ".." in option.parts):
        raise ValueError(
            f"{override!r}: an option of {group} is a file under conf/{group}/, and this one leaves that folder; "
            f"name an option, e.g. {group}=<name> (see conf/{group}/)"
        )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Overrides(_Strict):
    """Hydra overrides for every scale (`both`, as most tables have two), and for one only."""

    both: list[str] = []
    quick: list[str] = []
    imagenet_lite: list[str] = []
    paper: list[str] = []

    def at(self, scale: Scale) -> list[str]:
        return [*self.both, *getattr(self, scale)]

    def every(self) -> list[str]:
        """The overrides of every scale, run or not."""
        return [*self.both, *self.quick, *self.imagenet_lite, *self.paper]


def read_overrides(value: object) -> object:
    """A plain list applies at every scale; a mapping names `both` (every scale), `quick`, `imagenet_lite` and
    `paper` lists."""
    return {"both": value} if isinstance(value, list) else value


class Column(_Strict):
    key: str
    header: str
    metric: str | list[str]  # a list is summed (a sender's and a receiver's seconds)
    run: str  # the named run whose results fill it
    unit: Literal["percent", "seconds", "value"] = "percent"


CONDITION_KINDS = ("greater", "less", "within", "closer", "best", "lowest")


class Condition(_Strict):
    """One comparison of means. A reference is `row.column` or a number (in the column's shown unit).

    `factor` makes greater and less a ratio: `greater: [a, b], factor: 10` is a > 10·b, `less: [a, b], factor: 10`
    is 10·a < b ("far faster"). `closer: [a, b, c]` is |a − c| < |b − c| (a subset matches the whole better than a
    smaller one). `scales` limits a condition to the scales where the paper's statement can be tested as stated
    (a published gap of 0.3 points needs the paper's 1,000 images; a speed-up of 700× needs N copies run at once).
    """

    greater: tuple[str | float, str | float] | None = None
    less: tuple[str | float, str | float] | None = None
    within: tuple[str | float, str | float, float] | None = None
    closer: tuple[str | float, str | float, str | float] | None = None
    best: str | None = None  # this row has the highest mean of this column among `among` (all rows if unset)
    lowest: str | None = None
    among: list[str] | None = None
    factor: float | None = None
    scales: list[Scale] | None = None

    @model_validator(mode="after")
    def one_kind(self) -> Condition:
        kinds = [kind for kind in CONDITION_KINDS if getattr(self, kind) is not None]
        if len(kinds) != 1:
            raise ValueError(f"a condition is one of {', '.join(CONDITION_KINDS)}; got {kinds or 'none'}")
        if self.factor is not None and kinds[0] not in ("greater", "less"):
            raise ValueError(f"factor is a ratio for greater or less, not for {kinds[0]}")
        if self.factor is not None and not self.factor > 0:
            raise ValueError(f"factor={self.factor} must be positive")
        return self

    def references(self) -> list[str | float]:
        """The row.column references and numbers it compares (not the rows a best/lowest ranks)."""
        pair = self.greater or self.less or self.within or self.closer or ()
        return list(pair[:3] if self.closer else pair[:2])

    def rows(self) -> list[str]:
        """The rows it reads (for best/lowest without `among`: none named, every row of the scale)."""
        named = [reference.partition(".")[0] for reference in self.references() if isinstance(reference, str)]
        return named + list(self.among or [])


class Claim(_Strict):
    says: str  # the paper's claim, in a sentence
    holds: list[Condition]  # all must hold in our run


class Row(_Strict):
    key: str
    name: str
    overrides: Overrides = Overrides()
    metrics: dict[str, str | list[str]] = {}  # a column's metric for this row only (a receiver's seconds)
    paper: dict[str, float | str | None] = {}  # the published number per column (None: the paper has none)
    claim: Claim | None = None
    scales: list[Scale] = list(SCALES)  # a row the quick scale cannot run (ImageNet models) names `paper` only
    # The named runs this row takes, where the paper runs only some on it (Figure 3's BPDA+EOT: three defenses);
    # the columns of the others show "—". None: every run.
    runs: list[str] | None = None

    @model_validator(mode="before")
    @classmethod
    def read_lists(cls, data: dict) -> dict:
        return {**data, "overrides": read_overrides(data.get("overrides", []))}


class Figure(_Strict):
    file: str  # PNG name under outputs/tables/<scale>/
    kind: Literal["bars", "rounds", "steps"]
    title: str
    columns: list[str] = []  # bars: one panel per column, a bar per row
    # rounds: one panel pair (accuracy, success rate) per run, a curve per row. steps: one panel per accuracy
    # (clean, attacked) against the defense's learning step (its runs set defense.record_every), a curve per row
    # (and per run, when it names several).
    runs: list[str] = []


class Table(_Strict):
    name: str
    title: str
    source: str  # where the published numbers are: the paper file and its table or figure
    preset: str  # conf/experiment/<preset>.yaml
    seeds: dict[Scale, list[int]]
    overrides: Overrides = Overrides()
    runs: dict[str, Overrides]
    columns: list[Column]
    rows: list[Row]
    figures: list[Figure] = []
    notes: dict[Scale, str] = {}  # what a scale changes from the paper's setting, and why
    # The scales it runs at: a table the quick scale cannot run at all (ImageNet models) names `paper`; one with cells
    # on the real-photo scale adds `imagenet_lite`.
    scales: list[Scale] = DEFAULT_SCALES

    @model_validator(mode="before")
    @classmethod
    def read_lists(cls, data: dict) -> dict:
        runs = {name: read_overrides(value) for name, value in (data.get("runs") or {}).items()}
        return {**data, "overrides": read_overrides(data.get("overrides", [])), "runs": runs}

    @model_validator(mode="after")
    def consistent(self) -> Table:
        self.check_every_override()
        rows, columns = {row.key for row in self.rows}, {column.key for column in self.columns}
        for column in self.columns:
            if column.run not in self.runs:
                raise ValueError(f"column {column.key!r} draws from run {column.run!r}, not one of {list(self.runs)}")
        for row in self.rows:
            for run in row.runs or []:
                if run not in self.runs:
                    raise ValueError(f"row {row.key!r} takes run {run!r}, not one of {list(self.runs)}")
            for key in [*row.metrics, *row.paper]:
                if key not in columns:
                    raise ValueError(f"row {row.key!r} names column {key!r}, not one of {sorted(columns)}")
            for condition in row.claim.holds if row.claim else []:
                check_references(condition, rows, columns, row.key)
        for scale in self.scales:
            if not self.seeds.get(scale):
                raise ValueError(f"seeds.{scale} is empty: give the seeds each cell runs at that scale")
            for row in self.rows_at(scale):
                for run in self.runs_of(row):
                    cell_overrides(self, row, run, scale)
        return self

    def check_every_override(self) -> None:
        """Each override as written, at every scale, used or not: a refusal names where it is."""
        written = {"preset": [f"experiment={self.preset}"], "the table's overrides": self.overrides}
        written |= {f"row {row.key!r}": row.overrides for row in self.rows}
        written |= {f"run {name!r}": overrides for name, overrides in self.runs.items()}
        for where, overrides in written.items():
            for override in overrides if isinstance(overrides, list) else overrides.every():
                try:
                    check_override(override)
                except ValueError as error:
                    raise ValueError(f"{where}: {error}") from None

    def used_runs(self) -> list[str]:
        """The named runs the columns draw from, in column order."""
        return list(dict.fromkeys(column.run for column in self.columns))

    def runs_of(self, row: Row) -> list[str]:
        """The used runs the row takes, in column order."""
        return [run for run in self.used_runs() if row.runs is None or run in row.runs]

    def rows_at(self, scale: Scale) -> list[Row]:
        return [row for row in self.rows if scale in row.scales]


def check_references(condition: Condition, rows: set[str], columns: set[str], owner: str) -> None:
    for reference in condition.references():
        if isinstance(reference, str):
            row, _, column = reference.partition(".")
            if row not in rows or column not in columns:
                raise ValueError(f"row {owner!r}'s claim refers to {reference!r}: not a row.column of this table")
    for column in (condition.best, condition.lowest):
        if column is not None and column not in columns:
            raise ValueError(f"row {owner!r}'s claim ranks column {column!r}, not one of {sorted(columns)}")
    for row in condition.among or []:
        if row not in rows:
            raise ValueError(f"row {owner!r}'s claim ranks among {row!r}, not a row of this table")


ROW_VALUE = re.compile(r"(?<!\$)\{(\w+)\}")


def with_row_values(override: str, row: Row, scale: Scale) -> str:
    """`{key}` in a run's override is what the row sets `key` to at this scale: `victim={backbone}` attacks each
    row's own backbone (Table VII). `${...}` interpolations are Hydra's and stay."""
    values = dict(item.split("=", 1) for item in row.overrides.at(scale))

    def value(match: re.Match) -> str:
        if match.group(1) not in values:
            raise ValueError(f"{override!r} names {{{match.group(1)}}}, which row {row.key!r} does not set at {scale}")
        return values[match.group(1)]

    return ROW_VALUE.sub(value, override)


def cell_overrides(table: Table, row: Row, run: str, scale: Scale) -> list[str]:
    """The overrides of one cell (seed aside): the preset at this scale, then the table's, the row's and the run's.
    A key set twice would leave Hydra to pick one silently, and a comma would sweep: both are refused."""
    overrides = [
        f"experiment={table.preset}",
        f"scale={scale}",
        *table.overrides.at(scale),
        *row.overrides.at(scale),
        *(with_row_values(override, row, scale) for override in table.runs[run].at(scale)),
    ]
    cell = f"row {row.key!r}, run {run!r} at scale {scale}"
    seen: dict[str, str] = {}
    for override in overrides:
        try:
            check_override(override)  # again: a run's `{key}` has taken the row's value
        except ValueError as error:
            raise ValueError(f"{cell}: {error}") from None
        if "," in re.sub(r"\[.*?\]|\{.*?\}|'.*?'|\".*?\"", "", override):
            raise ValueError(f"{override!r} would sweep: give each value its own row or run")
        key = OVERRIDE_KEY.match(override).group(1)
        if key in seen:
            raise ValueError(f"{cell}: {seen[key]!r} and {override!r} both set {key}")
        seen[key] = override
    return overrides


def load_table(path: Path) -> Table:
    """A table file, checked; the error names the file and the key."""
    try:
        data = yaml.safe_load(Path(path).read_text())
        return Table(name=Path(path).stem, **data)
    except ValidationError as error:
        located = ((".".join(str(part) for part in problem["loc"]), problem["msg"]) for problem in error.errors())
        problems = "; ".join(f"{where or '(top)'}: {message}" for where, message in located)
        raise ValueError(f"{path}: {problems}") from None
    except (OSError, yaml.YAMLError, TypeError) as error:
        raise ValueError(f"{path}: {error}") from None


def load_tables(names: list[str] | None = None, folder: Path = TABLES_DIR) -> list[Table]:
    """Every table under `folder` (sorted), or the named ones; an unknown name lists the known."""
    paths = {path.stem: path for path in sorted(Path(folder).glob("*.yaml"))}
    if not paths:
        raise ValueError(f"no table files (*.yaml) under {folder}: point --tables-dir at a folder of them")
    unknown = [name for name in names or [] if name not in paths]
    if unknown:
        raise ValueError(f"no table {', '.join(unknown)} under {folder}; known: {', '.join(paths)}")
    return [load_table(paths[name]) for name in names or paths]
