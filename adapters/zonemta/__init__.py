"""ZoneMTA: its HTTP API, its log entries, its driver."""
