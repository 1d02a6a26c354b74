"""cdc-bridge: trigger-based change-data-capture between two business applications."""

__version__ = "0.1.0"
