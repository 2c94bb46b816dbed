"""What a call's record keeps of why it ended: masked like its transcript when PII redaction is on."""

from __future__ import annotations

from pathlib import Path

import pytest

from aybiza.edge.archive import SQLiteArchive
from aybiza.edge.calls import CallStore
from aybiza.edge.records import final_fields
from aybiza.edge.state_sqlite import SQLiteState
from aybiza.pipeline import CallContext, IncidentKind

CARD = "4111 1111 1111 1111"
EMAIL = "ann.lee@example.com"
DETAIL = f"the tool refused card {CARD} for {EMAIL}"


def _context(pii: bool) -> CallContext:
    ctx = CallContext(call_id="CA" + "e" * 32, caller="+14155550123")
    ctx.ledger.pii = pii
    ctx.ledger.incident(IncidentKind.STAGE_FAILED, f"order_status raised: {DETAIL}")
    return ctx


def test_the_outcome_detail_and_incidents_are_masked_when_redaction_is_on() -> None:
    fields = final_fields(_context(pii=True), detail=DETAIL)
    assert CARD not in fields["outcome_detail"] and EMAIL not in fields["outcome_detail"]
    assert fields["outcome_detail"].startswith("the tool refused card •••• •••• •••• •••• for ")
    [incident] = fields["incidents"]
    assert CARD not in incident.detail and EMAIL not in incident.detail
    assert incident.detail.startswith("order_status raised: the tool refused card ••••")


def test_without_redaction_the_detail_is_kept_as_it_was_said() -> None:
    fields = final_fields(_context(pii=False), detail=DETAIL)
    assert fields["outcome_detail"] == DETAIL
    assert fields["incidents"][0].detail == f"order_status raised: {DETAIL}"


def test_a_long_detail_is_masked_before_it_is_cut() -> None:
    detail = "x" * 490 + " " + CARD  # the cut at 500 falls inside the card number
    fields = final_fields(_context(pii=True), detail=detail)
    assert len(fields["outcome_detail"]) == 500 and "4111" not in fields["outcome_detail"]


@pytest.mark.anyio
async def test_the_archived_record_holds_the_masked_detail(tmp_path: Path) -> None:
    store = await CallStore(SQLiteState(tmp_path / "live.db"), SQLiteArchive(tmp_path / "archive.db")).open()
    try:
        ctx = _context(pii=True)
        await store.end_call(ctx, "stage_failed", detail=DETAIL)  # as the session ends a call
        archived = await store.archive.get(ctx.call_id)
        assert archived is not None and CARD not in archived.to_json() and EMAIL not in archived.to_json()
    finally:
        await store.aclose()
