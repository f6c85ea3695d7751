"""The ML runtime: device choice, safe model loading, the model cache, runners and batching.

Only this package imports torch/transformers. It may import nightowl.config, nightowl.enums,
nightowl.errors and nightowl.sources (torch-free checks), nothing of Celery, SQL or HTTP.
"""
