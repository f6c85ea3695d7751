"""The ML runtime: device choice, safe model loading, the model cache, runners and batching.

Only this package imports torch/transformers. From the core it imports only the torch-free,
ORM-free leaves (config, enums, errors, params, specs, tokens, sources, items), nothing of
Celery, SQL or HTTP (tests/test_import_hygiene.py holds the rule).
"""
