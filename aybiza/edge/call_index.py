"""The archive's searchable columns: what the operator console filters and lists calls by.

A record is stored whole as JSON; searching 100k of them by parsing JSON
would take seconds. So each archived row also carries a few plain columns
derived from its record (country, transport, region, model, duration, end
reason, cost and the flags: failover, barge-ins, tool calls, transfer, low
quality), indexed for the filters the console offers. The list page reads
only these columns, never the JSON.

The columns are added to an existing archive in place (``ALTER TABLE ... ADD
COLUMN``; older rows are back-filled from their JSON once, on open), so an
archive written by an older version keeps working and a newer row is still
readable by an older version (it ignores columns it does not know).

:class:`CallFilter` is the validated, bounded form of the console's query:
only these fields, short values, numbers in range; :func:`where_clause`
turns it into SQL with placeholders (never interpolated values).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .records import CallRecord

__all__ = [
    "INDEX_COLUMNS",
    "INDEX_VERSION",
    "LOW_QUALITY_SCORE",
    "CallFilter",
    "CallRow",
    "index_values",
    "pg_migration",
    "sqlite_migration",
    "where_clause",
]

INDEX_VERSION = 1
"""Bumped when the derived columns change: rows with an older ``index_version`` are back-filled on open."""

LOW_QUALITY_SCORE = 0.5
"""A call whose worst quality window scored at or below this is flagged low quality (the "low" tier)."""

# (name, SQLite type, PostgreSQL type)
INDEX_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("caller_country", "TEXT", "TEXT"),
    ("transport", "TEXT", "TEXT"),
    ("region", "TEXT", "TEXT"),
    ("model", "TEXT", "TEXT"),
    ("outcome", "TEXT", "TEXT"),
    ("duration_s", "REAL", "DOUBLE PRECISION"),
    ("cost_usd", "REAL", "DOUBLE PRECISION"),
    ("turns", "INTEGER", "INTEGER"),
    ("failovers", "INTEGER", "INTEGER"),
    ("barge_ins", "INTEGER", "INTEGER"),
    ("tool_calls", "INTEGER", "INTEGER"),
    ("transferred", "INTEGER", "INTEGER"),
    ("low_quality", "INTEGER", "INTEGER"),
    ("index_version", "INTEGER", "INTEGER"),
)
COLUMN_NAMES = tuple(name for name, _, _ in INDEX_COLUMNS)

# Filters are on one field and ordered by start: one composite index per filterable text field.
_INDEXED = ("caller_country", "transport", "region", "model", "outcome", "agent_id")
_FLAGS = ("failovers", "barge_ins", "tool_calls", "transferred", "low_quality")


def _model(record: CallRecord) -> str:
    """The model (or engine) that answered most turns; else the first that was asked; else ``none`` (as metrics)."""
    if record.usage.answers:
        return str(record.usage.answered_by)
    return next(iter(record.usage.tokens), "none")


def _low_quality(record: CallRecord) -> bool:
    quality = record.quality or {}
    score = quality.get("min_score", quality.get("score"))
    if isinstance(score, int | float) and not isinstance(score, bool):
        return score <= LOW_QUALITY_SCORE
    return quality.get("tier") == "low"


def _cost(record: CallRecord) -> float | None:
    total = (record.cost or {}).get("total_usd")
    try:
        return None if total is None else float(total)
    except (TypeError, ValueError):
        return None


def index_values(record: CallRecord) -> tuple[Any, ...]:
    """The derived columns of ``record``, in :data:`INDEX_COLUMNS` order."""
    tool_calls = sum(len(turn.tool_calls) for turn in record.turns) or sum(record.usage.tools.values())
    transfer_tools = sum(count for name, count in record.usage.tools.items() if "transfer" in name)
    barge_ins = max(record.usage.interruptions, sum(1 for turn in record.turns if turn.interrupted))
    return (
        record.caller_country or "",
        record.transport or "",
        record.route.get("region", ""),
        _model(record),
        record.outcome or "",
        round(record.duration_s, 3),
        _cost(record),
        len(record.turns),
        len(record.usage.failovers),
        barge_ins,
        tool_calls,
        int(record.outcome == "transferred" or transfer_tools > 0),
        int(_low_quality(record)),
        INDEX_VERSION,
    )


def sqlite_migration(existing: set[str], table: str) -> list[str]:
    """Statements that add the missing columns and the console's indexes to a SQLite ``table``."""
    statements = [f"ALTER TABLE {table} ADD COLUMN {name} {kind}"
                  for name, kind, _ in INDEX_COLUMNS if name not in existing]
    statements += [f"CREATE INDEX IF NOT EXISTS {table}_{name}_started ON {table} ({name}, started_at DESC)"
                   for name in _INDEXED]
    statements += [f"CREATE INDEX IF NOT EXISTS {table}_{name}_flag ON {table} (started_at DESC) WHERE {name} > 0"
                   for name in _FLAGS]
    return statements


def pg_migration(table: str) -> str:
    """The same for PostgreSQL (``ADD COLUMN IF NOT EXISTS``: idempotent, one script)."""
    statements = [f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {name} {kind}" for name, _, kind in INDEX_COLUMNS]
    statements += [f"CREATE INDEX IF NOT EXISTS {table}_{name}_started ON {table} ({name}, started_at DESC)"
                   for name in _INDEXED]
    statements += [f"CREATE INDEX IF NOT EXISTS {table}_{name}_flag ON {table} (started_at DESC) WHERE {name} > 0"
                   for name in _FLAGS]
    return ";\n".join(statements) + ";"


Flag = Literal["failover", "barge_in", "tool_call", "transfer", "low_quality"]
FLAG_COLUMNS: dict[str, str] = {
    "failover": "failovers",
    "barge_in": "barge_ins",
    "tool_call": "tool_calls",
    "transfer": "transferred",
    "low_quality": "low_quality",
}
"""A flag the console filters by, and the column that counts it."""

_Name = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9_.:+\-]+$")


class CallFilter(BaseModel):
    """What the console's call list may be filtered by; every value bounded (the query is public input)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")
    agent: str | None = _Name
    transport: str | None = _Name
    region: str | None = _Name
    model: str | None = Field(default=None, max_length=128, pattern=r"^[A-Za-z0-9_.:+/\-]+$")
    outcome: str | None = _Name
    min_duration_s: float | None = Field(default=None, ge=0, le=86_400)
    max_duration_s: float | None = Field(default=None, ge=0, le=86_400)
    min_cost_usd: float | None = Field(default=None, ge=0, le=1_000)
    max_cost_usd: float | None = Field(default=None, ge=0, le=1_000)
    since: float | None = Field(default=None, ge=0, le=10_000_000_000)
    until: float | None = Field(default=None, ge=0, le=10_000_000_000)
    flags: tuple[Flag, ...] = Field(default=(), max_length=5)


def where_clause(filters: CallFilter, mark: str) -> tuple[str, list[Any]]:
    """``(" WHERE ...", args)`` for ``filters`` with ``mark`` placeholders (``?`` or ``%s``); only archived rows
    with derived columns are matched when a derived column is filtered on."""
    clauses: list[str] = []
    args: list[Any] = []

    def add(sql: str, value: Any) -> None:
        clauses.append(sql.replace("?", mark))
        args.append(value)

    for column, value in (("caller_country", filters.country), ("agent_id", filters.agent),
                          ("transport", filters.transport), ("region", filters.region),
                          ("model", filters.model), ("outcome", filters.outcome)):
        if value is not None:
            add(f"{column} = ?", value)
    if filters.min_duration_s is not None:
        add("duration_s >= ?", filters.min_duration_s)
    if filters.max_duration_s is not None:
        add("duration_s <= ?", filters.max_duration_s)
    if filters.min_cost_usd is not None:
        add("cost_usd >= ?", filters.min_cost_usd)
    if filters.max_cost_usd is not None:
        add("cost_usd <= ?", filters.max_cost_usd)
    if filters.since is not None:
        add("started_at >= ?", filters.since)
    if filters.until is not None:
        add("started_at < ?", filters.until)
    for flag in dict.fromkeys(filters.flags):
        clauses.append(f"{FLAG_COLUMNS[flag]} > 0")
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


class CallRow(BaseModel):
    """One line of the console's list: the derived columns, no transcript."""

    call_id: str
    status: str
    agent_id: str
    started_at: float
    ended_at: float | None = None
    caller_country: str = ""
    transport: str = ""
    region: str = ""
    model: str = ""
    outcome: str = ""
    duration_s: float | None = None
    cost_usd: float | None = None
    turns: int = 0
    failovers: int = 0
    barge_ins: int = 0
    tool_calls: int = 0
    transferred: int = 0
    low_quality: int = 0

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> CallRow:
        """From ``SELECT`` :data:`ROW_COLUMNS` (NULLs of rows not yet back-filled become defaults)."""
        values = {name: value for name, value in zip(ROW_COLUMNS, row, strict=True) if value is not None}
        return cls.model_validate(values)


ROW_COLUMNS: tuple[str, ...] = ("call_id", "status", "agent_id", "started_at", "ended_at",
                                *[name for name in COLUMN_NAMES if name != "index_version"])
"""The columns :meth:`CallRow.from_row` reads, in order."""
