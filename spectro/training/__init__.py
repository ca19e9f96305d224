"""Training: the recipe (`Trainer`), its epoch loop, optimisation, checkpoints and several processes."""

from .signals import GracefulStop, TrainingStopped
from .trainer import Run, Trainer, start_run

__all__ = ["GracefulStop", "Run", "Trainer", "TrainingStopped", "start_run"]
