"""Fine-tuning of the local model: `train(config, examples)` returns where the adapter and merged model are."""

from llamaduo.train.trainer import TrainResult, train

__all__ = ["TrainResult", "train"]
