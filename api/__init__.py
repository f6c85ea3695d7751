"""The HTTP API: FastAPI routes over the same core services as the CLI. Never imports torch."""
