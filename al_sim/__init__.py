"""al_sim: active-learning experiments on medical image classification."""

__version__ = "0.1.0"
