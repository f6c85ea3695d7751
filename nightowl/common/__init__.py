"""What every layer may import, workers included: settings, enums, errors, the request specs
and value checks, the context-limit rule, model sources, the item outcome. Torch-, ORM- and
Celery-free."""
