"""Training, evaluation, prediction and checkpoints; knows no model family."""
