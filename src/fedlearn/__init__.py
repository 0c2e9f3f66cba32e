"""fedlearn: federated learning for privacy-preserving image classification."""

__all__ = ["__version__"]

__version__ = "0.1.0"
