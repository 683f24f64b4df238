"""Event ingestion from the MTAs, event history and dead letters."""
