"""`mtactl policies list|add|observe|enforce|decisions`."""

from __future__ import annotations

import json
from pathlib import Path

from tests.controlplane.test_cli import mtactl


def test_an_operator_adds_a_rule_in_observe_mode_enforces_it_and_lists_its_decisions(tmp_path: Path) -> None:
    added = mtactl(
        tmp_path,
        *("policies", "add", "gmail-bounces", "--metric", "bounce_rate", "--threshold", "0.3"),
        *("--scope", "domain", "--match", "domain=gmail.com", "--duration", "1h"),
    )
    assert added.returncode == 0, added.stderr
    assert "gmail-bounces" in added.stdout and "observe" in added.stdout and "domain:domain=gmail.com" in added.stdout
    enforced = mtactl(tmp_path, "policies", "enforce", "gmail-bounces")
    assert enforced.returncode == 0 and " enforce " in enforced.stdout
    [listed] = json.loads(mtactl(tmp_path, "policies", "list", "--json").stdout)["data"]
    assert (listed["name"], listed["mode"], listed["match"]) == ("gmail-bounces", "enforce", {"domain": "gmail.com"})
    back = mtactl(tmp_path, "policies", "observe", "gmail-bounces")
    assert back.returncode == 0 and " observe " in back.stdout
    decisions = mtactl(tmp_path, "policies", "decisions", "--json")
    assert decisions.returncode == 0 and json.loads(decisions.stdout)["data"] == []


def test_a_bad_rule_is_refused_in_words_naming_the_field(tmp_path: Path) -> None:
    refused = mtactl(
        tmp_path,
        *("policies", "add", "bad", "--metric", "response_match", "--threshold", "5", "--scope", "domain"),
        *("--pattern", "(a+)+$"),
    )
    assert refused.returncode == 1 and "(pattern)" in refused.stderr and "repeat" in refused.stderr
    unknown = mtactl(tmp_path, "policies", "enforce", "nothing-by-that-name")
    assert unknown.returncode == 1 and "no policy 'nothing-by-that-name'" in unknown.stderr


def test_decisions_are_listed_one_line_each(tmp_path: Path) -> None:
    import asyncio
    import uuid
    from datetime import UTC, datetime, timedelta

    from controlplane.db.tables import PolicyDecisionRow
    from controlplane.services import Services
    from controlplane.settings import Settings

    assert mtactl(tmp_path, "policies", "list").returncode == 0  # creates and migrates the database

    async def decide() -> None:
        services = await Services.start(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/cli.db"))
        now = datetime.now(UTC)
        async with services.sessions.begin() as session:
            session.add(
                PolicyDecisionRow(
                    id=uuid.uuid4(),
                    policy_id=uuid.uuid4(),
                    policy_name="gmail-bounces",
                    scope="domain",
                    scope_value="gmail.com",
                    action="suspend",
                    mode="observe",
                    metric_value=0.5,
                    events=30,
                    decided_at=now,
                    until=now + timedelta(hours=1),
                    note="observe mode: would suspend domain gmail.com for 1h",
                )
            )
        await services.close()

    asyncio.run(decide())
    listed = mtactl(tmp_path, "policies", "decisions")
    assert listed.returncode == 0, listed.stderr
    assert "gmail-bounces" in listed.stdout and "observe" in listed.stdout and "domain:gmail.com" in listed.stdout
