"""Fine-tuning: train() runs (or resumes) one fine-tune, evaluate() scores any saved model."""

from nightowl_workers.training.config import TrainConfig, TrainResult
from nightowl_workers.training.evaluation import evaluate
from nightowl_workers.training.loop import train

__all__ = ["TrainConfig", "TrainResult", "evaluate", "train"]
