"""mars-eval: train, sample, score and ablate autoregressive text-to-image models."""

__version__ = "0.1.0"
