"""ZoneMTA: its HTTP API (``client``), its log entries and core/http-bounce body (``events``) and their mapping onto
the queue model (``mapping``), ingested through ``log_source.ZONEMTA``; all behind ``driver.DRIVER``."""
