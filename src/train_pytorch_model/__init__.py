"""Azure ML designer's Train PyTorch Model, rebuilt as an Azure ML v2 pipeline component."""

__version__ = "0.1.0"
