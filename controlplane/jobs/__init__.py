"""Background jobs: one list of periodic jobs, run in-process (apscheduler) or on saq workers (Redis)."""
