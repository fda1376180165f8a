"""Training hyper-parameters, importable without TensorFlow."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    """Hyper-parameters; the defaults are the ones the built-in models are trained with."""

    hidden: tuple[int, ...] = (25, 15)
    l2: float = 1e-3
    epochs: int = 300
    learning_rate: float = 3e-3
    batch_size: int = 64
    patience: int = 30
    seed: int = 7
    output_activation: str = "linear"
    tune_thresholds: str = "f1"  # or "accuracy", "balanced_accuracy", "none" (stay at 0.5)


# Per data set recipes for the built-in models (measured on the default seed's split).
# Diabetes has 265 training rows: without strong L2 the 25-15 network overfits it.
RECIPES = {
    "digits-binary": Config(epochs=100),
    "digits": Config(),
    "digit-traits": Config(),
    "diabetes": Config(l2=0.1, learning_rate=1e-3),
}
