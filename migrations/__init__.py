"""Schema history (alembic) and the scripts that move data from the legacy queue model."""
