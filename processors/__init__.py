"""msgstatus: provider delivery receipts in, one ordered `message.status` stream out."""

__version__ = "0.1.0"
