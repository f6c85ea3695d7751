"""Celery tasks: thin adapters that claim work in SQL, call workers/, and write results back."""
