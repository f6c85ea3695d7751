"""Fine-tunes: the run service (submit, lease, metrics, registration, the promotion gate) and the
training data it reads."""
