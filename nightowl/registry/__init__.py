"""The model registry: versions, aliases, references (`name@prod`), checkpoint copies, and how a
fine-tune's promotion ended."""
