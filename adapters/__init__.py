"""MTA adapters: each MTA's APIs and logs mapped onto the shared queue model in ``adapters.model``."""
