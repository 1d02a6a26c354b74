"""Inbound: receive the peer's batches (`app`), apply them (`apply`), settle conflicts."""
