"""Writers for query rows: JSONL and CSV as line streams, Parquet in row groups (flat memory)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

# Flat columns: analysts open CSV and Parquet in tools that cannot reach into JSON.
FLAT_COLUMNS = [
    "job_id", "custom_id", "kind", "model", "status", "text", "label", "score", "output",
    "error_code", "error_message", "tokens_in", "tokens_out", "worker", "device", "attempts",
    "started_at", "finished_at",
]
PARQUET_ROW_GROUP = 10_000


def flat(row: dict[str, Any]) -> dict[str, Any]:
    output = row.get("output") or {}
    error = row.get("error") or {}
    inp = row.get("input") or {}
    score = output.get("score") if isinstance(output, dict) else None
    return {
        "job_id": row["job_id"],
        "custom_id": row["custom_id"],
        "kind": row["kind"],
        "model": row["model"],
        "status": row["status"],
        "text": inp.get("text", inp.get("source")) if isinstance(inp, dict) else None,
        "label": output.get("label") if isinstance(output, dict) else None,
        "score": float(score) if isinstance(score, int | float) else None,
        "output": json.dumps(row["output"], ensure_ascii=False) if row.get("output") else None,
        "error_code": error.get("code"),
        "error_message": error.get("message"),
        "tokens_in": row.get("tokens_in"),
        "tokens_out": row.get("tokens_out"),
        "worker": row.get("worker"),
        "device": row.get("device"),
        "attempts": row.get("attempts"),
        "started_at": row.get("started_at"),
        "finished_at": row.get("finished_at"),
    }


def jsonl_lines(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    for row in rows:
        yield json.dumps(row, ensure_ascii=False) + "\n"


def csv_lines(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FLAT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(flat(row))
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()
    yield buf.getvalue()


def _parquet_schema() -> Any:
    import pyarrow as pa

    types = {"score": pa.float64(), "tokens_in": pa.int64(), "tokens_out": pa.int64(),
             "attempts": pa.int64(), "started_at": pa.timestamp("us", tz="UTC"),
             "finished_at": pa.timestamp("us", tz="UTC")}
    return pa.schema([(name, types.get(name, pa.string())) for name in FLAT_COLUMNS])


def _stamp(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def write_parquet(rows: Iterable[dict[str, Any]], path: Path) -> int:
    """Write rows in row groups so memory stays flat however many there are; returns the count."""
    # pyarrow is heavy: imported only when someone asks for Parquet.
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _parquet_schema()
    written = 0
    batch: dict[str, list[Any]] = {name: [] for name in FLAT_COLUMNS}

    def flush(writer: Any) -> None:
        writer.write_table(pa.table(batch, schema=schema))
        for values in batch.values():
            values.clear()

    with pq.ParquetWriter(str(path), schema) as writer:
        for row in rows:
            for name, value in flat(row).items():
                batch[name].append(_stamp(value) if name.endswith("_at") else value)
            written += 1
            if written % PARQUET_ROW_GROUP == 0:
                flush(writer)
        if written == 0 or written % PARQUET_ROW_GROUP:
            flush(writer)
    return written
