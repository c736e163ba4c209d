"""chert-gateway: a streaming upload gateway in front of Chert's messaging API."""

__version__ = "0.1.0"
