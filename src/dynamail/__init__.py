"""dynamail: a mail server that runs as one server or as a Dynamic Cluster."""

__version__ = "0.1.0"

__all__ = ["__version__"]
