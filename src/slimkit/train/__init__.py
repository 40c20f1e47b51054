"""Fine-tuning for training-based passes: `fit` a torch module on a slimkit Dataset, resumably."""

from slimkit.train.checkpoint import CHECKPOINT_NAME, load_checkpoint
from slimkit.train.config import TrainConfig
from slimkit.train.engine import TrainBatch, TrainingDiverged, TrainResult, fit
from slimkit.train.optim import learning_rate, make_optimizer
from slimkit.train.samples import as_dataset

__all__ = ["CHECKPOINT_NAME", "TrainBatch", "TrainConfig", "TrainResult", "TrainingDiverged", "as_dataset", "fit",
           "learning_rate", "load_checkpoint", "make_optimizer"]
