"""The platform under every domain: the database engine and ORM, migrations, the analyst role,
the broker, the Celery app, the embedded stack, tenants and API keys."""
