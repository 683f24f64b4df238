"""Settings from the environment: bad values are refused at start-up, in words, naming the variable."""

from __future__ import annotations

import pytest

from controlplane.settings import Settings, SettingsError, async_database_url


@pytest.mark.parametrize(
    "url", ["sqlite+aiosqlite:///./mtactl.db", "postgresql+asyncpg://mtactl@db.internal/mtactl", "sqlite:///x.db"]
)
def test_supported_database_urls_are_accepted(url: str) -> None:
    assert Settings.from_env({"MTACTL_DATABASE_URL": url}).database_url == url


@pytest.mark.parametrize("url", ["notaurl", "mysql://u@h/db", "postgresql+psycopg2://u@h/db", "sqlite://x.db"])
def test_unsupported_database_urls_are_refused_in_words(url: str) -> None:
    with pytest.raises(SettingsError, match=r"^MTACTL_DATABASE_URL: \w") as caught:
        Settings.from_env({"MTACTL_DATABASE_URL": url})
    assert "Could not parse" not in str(caught.value)


def test_a_url_without_a_driver_gets_the_async_driver_mtactl_uses() -> None:
    assert async_database_url("postgresql://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert async_database_url("postgres://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert async_database_url("sqlite:///./x.db") == "sqlite+aiosqlite:///./x.db"
    assert async_database_url("postgresql+asyncpg://u@h/db") == "postgresql+asyncpg://u@h/db"
