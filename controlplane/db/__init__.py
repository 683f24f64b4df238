"""Persistence: SQLAlchemy tables, engines and migrations. Nothing outside this package sees a row object."""
