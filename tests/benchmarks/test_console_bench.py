"""The console benchmark's fixture: archived rows as the server writes them, searchable and readable."""

from __future__ import annotations

from pathlib import Path

import anyio

from aybiza.edge.archive import SQLiteArchive
from aybiza.edge.call_index import CallFilter
from benchmarks.console import build_archive


def test_the_benchmark_archive_is_one_the_console_reads(tmp_path: Path) -> None:
    path = tmp_path / "calls-archive.db"
    build_archive(path, 300)
    archive = SQLiteArchive(path)

    async def read() -> None:
        rows, total = await archive.search(CallFilter(), limit=10)
        assert total == 300 and len(rows) == 10 and rows[0].started_at >= rows[-1].started_at
        flagged, _ = await archive.search(CallFilter(flags=("barge_in",)))
        assert flagged and all(row.barge_ins for row in flagged)
        record = await archive.get(rows[0].call_id)
        assert record is not None and record.turns and record.cost
        await archive.aclose()

    anyio.run(read)
