"""Bulk jobs: intake and input checks, the job service (submit, cancel, retry, finalize),
chunks and their leases, dispatch, quotas, result rows and per-job stats."""
