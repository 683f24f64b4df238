"""The audit log: who did what, why, and what came of it."""
