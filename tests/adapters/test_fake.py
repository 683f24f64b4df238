from __future__ import annotations

import pytest

from adapters.base import MtaUnreachable, Target
from adapters.fake import FakeMta


async def test_the_fake_applies_targets_as_kumod_does() -> None:
    fake = FakeMta({"spring:acme@gmail.com": 5, "acme@yahoo.com": 3, "gmail.com": 2})
    assert sorted(fake.matching(Target(domain="gmail.com"))) == ["gmail.com", "spring:acme@gmail.com"]
    assert fake.matching(Target(tenant="acme", campaign="spring")) == ["spring:acme@gmail.com"]
    ident = await fake.bounce(Target(tenant="acme"), reason="cleanup")
    assert (await fake.list_bounces())[0].total_bounced == 8
    assert (await fake.queue_counts()).scheduled == {"spring:acme@gmail.com": 0, "acme@yahoo.com": 0, "gmail.com": 2}
    await fake.cancel_bounce(ident)
    assert await fake.list_bounces() == []


async def test_the_fake_suspends_resumes_and_can_be_unreachable() -> None:
    fake = FakeMta({"gmail.com": 1})
    ident = await fake.suspend(Target(domain="gmail.com"), reason="block", duration="2h")
    assert [s.id for s in await fake.list_suspensions()] == [ident]
    await fake.resume(ident)
    assert await fake.list_suspensions() == []
    fake.reachable = False
    with pytest.raises(MtaUnreachable):
        await fake.suspend(Target(domain="gmail.com"), reason="x")
