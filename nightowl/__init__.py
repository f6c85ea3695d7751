"""nightowl: a distributed batch platform for Transformer models.

The core is one package per domain, in layers. A package imports only packages of a lower layer
(and itself); packages that share a layer never import each other. `workers/` may import
`common` alone; `tests/test_import_hygiene.py` holds every import in the tree to this list.
"""

__version__ = "0.1.0"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("common",),                        # settings, enums, errors, specs, values, tokens, items
    ("platform",),                      # database, ORM, roles, broker, Celery app, auth
    ("storage",),                       # artifact store, host cache, uploaded files
    ("registry",),                      # model versions and aliases
    ("jobs",),                          # intake, job service, chunks, dispatch, quotas
    ("finetune", "openai", "query"),    # fine-tunes, OpenAI's API, results across jobs
    ("scheduling",),                    # schedules that fire jobs and fine-tunes
    ("fleet",),                         # heartbeats, the maintenance pass, liveness
    ("cli",),                           # the command line, over every domain
)
