"""Throttling rules over the event rollups, and their decisions."""
