"""Analyst views: v_results, v_label_daily, v_job_throughput (documented in docs/sql.md)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 18:00:00

The SQL is written out here rather than built from the ORM so that this revision keeps meaning
what it meant when it ran, whatever the models become. JSON access, dates and time differences
differ between the two databases; everything else is shared.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VIEWS = ("v_job_throughput", "v_label_daily", "v_results")

DIALECT = {
    "postgresql": {
        "label": "i.output ->> 'label'",
        "score": "CAST(i.output ->> 'score' AS DOUBLE PRECISION)",
        "text": "COALESCE(i.input ->> 'text', i.input ->> 'source')",
        "day": "CAST(i.finished_at AT TIME ZONE 'UTC' AS DATE)",
        "seconds": "CAST(EXTRACT(EPOCH FROM ({end} - {start})) AS DOUBLE PRECISION)",
    },
    "sqlite": {
        "label": "json_extract(i.output, '$.label')",
        "score": "CAST(json_extract(i.output, '$.score') AS REAL)",
        "text": "COALESCE(json_extract(i.input, '$.text'), json_extract(i.input, '$.source'))",
        "day": "date(i.finished_at)",
        "seconds": "((julianday({end}) - julianday({start})) * 86400.0)",
    },
}

# The latest result of each item across a job and its retries (retries copy custom_id). A
# finished attempt outranks a retry that has not run yet, so a pending retry hides nothing.
V_RESULTS = """
CREATE VIEW v_results AS
WITH RECURSIVE lineage (job_id, root_job_id) AS (
    SELECT id, id FROM jobs WHERE parent_job_id IS NULL
    UNION ALL
    SELECT j.id, l.root_job_id FROM jobs j JOIN lineage l ON j.parent_job_id = l.job_id
),
ranked AS (
    SELECT l.root_job_id, i.id AS item_id,
           ROW_NUMBER() OVER (
               PARTITION BY l.root_job_id, i.custom_id
               ORDER BY CASE WHEN i.finished_at IS NULL THEN 1 ELSE 0 END,
                        j.created_at DESC, i.id DESC
           ) AS attempt_rank
    FROM job_items i
    JOIN lineage l ON l.job_id = i.job_id
    JOIN jobs j ON j.id = i.job_id
)
SELECT r.root_job_id, i.job_id, i.id AS item_id, i.custom_id, j.tenant_id, j.kind,
       mv.name AS model_name, mv.version AS model_version, i.status,
       {text} AS input_text, {label} AS label, {score} AS score,
       i.input, i.output, i.error_code, i.error_message, i.tokens_in, i.tokens_out,
       i.worker, i.device, i.attempts, i.started_at, i.finished_at
FROM ranked r
JOIN job_items i ON i.id = r.item_id
JOIN jobs j ON j.id = i.job_id
JOIN model_versions mv ON mv.id = j.model_version_id
WHERE r.attempt_rank = 1
"""

V_LABEL_DAILY = """
CREATE VIEW v_label_daily AS
SELECT {day} AS day, j.tenant_id, mv.name AS model_name, mv.version AS model_version,
       j.kind, {label} AS label, COUNT(*) AS items, AVG({score}) AS avg_score
FROM job_items i
JOIN jobs j ON j.id = i.job_id
JOIN model_versions mv ON mv.id = j.model_version_id
WHERE i.status = 'succeeded' AND i.finished_at IS NOT NULL AND {label} IS NOT NULL
GROUP BY {day}, j.tenant_id, mv.name, mv.version, j.kind, {label}
"""

V_JOB_THROUGHPUT = """
CREATE VIEW v_job_throughput AS
WITH chunk_totals AS (
    SELECT job_id, COUNT(*) AS chunks,
           SUM(CASE WHEN status = 'done' THEN 1 ELSE 0 END) AS chunks_done,
           MIN(started_at) AS first_started_at, MAX(finished_at) AS last_finished_at,
           SUM(batches) AS micro_batches, SUM(device_seconds) AS device_seconds
    FROM job_chunks GROUP BY job_id
),
token_totals AS (
    SELECT job_id, SUM(tokens_in) AS tokens_in, SUM(tokens_out) AS tokens_out
    FROM job_items GROUP BY job_id
)
SELECT j.id AS job_id, j.tenant_id, j.kind, mv.name AS model_name, mv.version AS model_version,
       j.status, j.total_items, j.succeeded_items, j.failed_items,
       c.chunks, c.chunks_done, c.micro_batches, c.device_seconds,
       t.tokens_in, t.tokens_out, c.first_started_at, c.last_finished_at,
       {wall} AS wall_seconds,
       (j.succeeded_items + j.failed_items) / NULLIF({wall}, 0) AS items_per_second,
       t.tokens_out / NULLIF({wall}, 0) AS tokens_out_per_second
FROM jobs j
JOIN model_versions mv ON mv.id = j.model_version_id
LEFT JOIN chunk_totals c ON c.job_id = j.id
LEFT JOIN token_totals t ON t.job_id = j.id
"""


def upgrade() -> None:
    d = DIALECT[op.get_bind().dialect.name]
    wall = d["seconds"].format(start="c.first_started_at", end="c.last_finished_at")
    for template in (V_RESULTS, V_LABEL_DAILY, V_JOB_THROUGHPUT):
        op.execute(template.format(wall=wall, **d))


def downgrade() -> None:
    for name in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {name}")
