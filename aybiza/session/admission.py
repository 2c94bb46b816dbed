"""Admission: how many calls of each kind this process takes at once.

Phone and browser calls have separate budgets inside the process's total,
so browser sessions can never take the slots phone callers need. A
:class:`Ticket` holds a slot from admission until the call's session ends.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["Admission", "Ticket"]


class Ticket:
    """One admitted call's slot; :meth:`release` gives it back (idempotent)."""

    __slots__ = ("kind", "_admission", "_released")

    def __init__(self, admission: Admission, kind: str) -> None:
        self.kind = kind
        self._admission = admission
        self._released = False

    def release(self) -> None:
        """Give the slot back."""
        if not self._released:
            self._released = True
            self._admission._release(self.kind)


class Admission:
    """Per-kind and total call budgets."""

    def __init__(self, total: int, per_kind: Mapping[str, int] | None = None) -> None:
        self.total = total
        self.per_kind = dict(per_kind or {})
        self.counts: dict[str, int] = {}

    @property
    def active(self) -> int:
        """Calls admitted and not yet released."""
        return sum(self.counts.values())

    def admit(self, kind: str) -> Ticket | None:
        """A ticket for a call of ``kind``, or None when the total or the kind's budget is used up."""
        count = self.counts.get(kind, 0)
        if self.active >= self.total or count >= self.per_kind.get(kind, self.total):
            return None
        self.counts[kind] = count + 1
        return Ticket(self, kind)

    def _release(self, kind: str) -> None:
        self.counts[kind] = max(0, self.counts.get(kind, 0) - 1)
