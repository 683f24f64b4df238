"""Recipient domain reputation from the event rollups."""
