"""Results across jobs: one filter for the CLI, the API and the dashboard, and its writers."""
