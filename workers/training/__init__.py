"""Fine-tuning: train() runs (or resumes) one fine-tune, evaluate() scores any saved model."""

from workers.training.config import TrainConfig, TrainResult
from workers.training.evaluation import evaluate
from workers.training.loop import train

__all__ = ["TrainConfig", "TrainResult", "evaluate", "train"]
