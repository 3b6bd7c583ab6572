"""Training: the quality-gated pipeline, its runs, and the worker that executes them."""

from app.training.evaluation import TrainingPolicy
from app.training.pipeline import MLTrainingPipeline

__all__ = ["MLTrainingPipeline", "TrainingPolicy"]
