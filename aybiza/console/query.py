"""The call list's query string: validated and bounded before anything reaches the archive.

Public input (even behind the token): only known parameters, each short,
numbers in range, at most one of each but ``flag``; an empty value (what a
form sends for a field left blank) means no filter. Anything else is a
:class:`QueryError` (the page answers 400 with the reason).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from pydantic import ValidationError
from starlette.datastructures import QueryParams

from ..edge.call_index import FLAG_COLUMNS, CallFilter

__all__ = ["MAX_PAGE", "PER_PAGE", "ListQuery", "QueryError", "parse_list_query"]

PER_PAGE = (10, 25, 50, 100)
"""Page sizes offered."""
MAX_PAGE = 1000
"""Deepest page (at 100 a page: the newest 100k calls); narrow the filters to see older ones."""
MAX_QUERY_CHARS = 2048

_TEXT = {"country": "country", "agent": "agent", "transport": "transport", "region": "region", "model": "model",
         "outcome": "outcome"}
_NUMBERS = {"min_duration": "min_duration_s", "max_duration": "max_duration_s", "min_cost": "min_cost_usd",
            "max_cost": "max_cost_usd"}
_ALLOWED = {*_TEXT, *_NUMBERS, "flag", "page", "per_page", "hours"}


class QueryError(ValueError):
    """The query is not one the list accepts; the message says why."""


@dataclass(frozen=True)
class ListQuery:
    """A validated list request: filters, page (from 1), page size, and the query string that made it."""

    filters: CallFilter
    page: int
    per_page: int
    params: tuple[tuple[str, str], ...]  # the non-empty filter parameters, to rebuild links

    def link(self, page: int) -> str:
        """The list URL of another page with the same filters."""
        extra = [("per_page", str(self.per_page))] if self.per_page != 50 else []
        return "/calls?" + urlencode([*self.params, *extra, ("page", str(page))])


def _int(text: str, name: str, low: int, high: int) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 7 and low <= int(text) <= high):
        raise QueryError(f"{name} is an integer from {low} to {high}")
    return int(text)


def parse_list_query(query: QueryParams, *, now: float) -> ListQuery:
    """The :class:`ListQuery` of ``query``; :class:`QueryError` if any part is out of bounds."""
    if len(str(query)) > MAX_QUERY_CHARS:
        raise QueryError("the query is too long")
    unknown = set(query.keys()) - _ALLOWED
    if unknown:
        raise QueryError(f"unknown parameter {sorted(unknown)[0][:32]!r}")
    for key in _ALLOWED - {"flag"}:
        if len(query.getlist(key)) > 1:
            raise QueryError(f"{key} given more than once")
    fields: dict[str, object] = {}
    params: list[tuple[str, str]] = []
    for key, field in _TEXT.items():
        value = query.get(key, "").strip()
        if value:
            fields[field] = value.upper() if key == "country" else value
            params.append((key, value))
    for key, field in _NUMBERS.items():
        value = query.get(key, "").strip()
        if value:
            try:
                fields[field] = float(value)
            except ValueError:
                raise QueryError(f"{key} is a number") from None
            params.append((key, value))
    hours = query.get("hours", "").strip()
    if hours:
        fields["since"] = now - 3600.0 * _int(hours, "hours", 1, 24 * 400)
        params.append(("hours", hours))
    flags = [flag for flag in query.getlist("flag") if flag]
    if len(flags) > len(FLAG_COLUMNS) or any(flag not in FLAG_COLUMNS for flag in flags):
        raise QueryError(f"flag is one of {', '.join(FLAG_COLUMNS)}")
    if flags:
        fields["flags"] = tuple(dict.fromkeys(flags))
        params += [("flag", flag) for flag in dict.fromkeys(flags)]
    try:
        filters = CallFilter.model_validate(fields)
    except ValidationError as error:
        first = error.errors()[0]
        raise QueryError(f"{'.'.join(str(p) for p in first['loc']) or 'query'}: {first['msg']}") from None
    per_page = _int(query.get("per_page", "50"), "per_page", 1, max(PER_PAGE))
    if per_page not in PER_PAGE:
        raise QueryError(f"per_page is one of {', '.join(map(str, PER_PAGE))}")
    page = _int(query.get("page", "1"), "page", 1, MAX_PAGE)
    return ListQuery(filters, page, per_page, tuple(params))
