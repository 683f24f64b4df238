from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.model import QueueName


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("gmail.com", QueueName(domain="gmail.com")),
        ("acme@gmail.com", QueueName(domain="gmail.com", tenant="acme")),
        ("spring-promo:acme@gmail.com", QueueName(domain="gmail.com", tenant="acme", campaign="spring-promo")),
        ("spring:@gmail.com", QueueName(domain="gmail.com", campaign="spring")),
        (
            "c:t@example.com!mx.example.net",
            QueueName(domain="example.com", campaign="c", tenant="t", routing_domain="mx.example.net"),
        ),
    ],
)
def test_kumomta_queue_names_split_into_their_parts(name: str, parts: QueueName) -> None:
    assert QueueName.parse(name) == parts
    assert parts.format() == name


part = st.text(
    alphabet=st.characters(blacklist_characters="@:!", blacklist_categories=("Cs",)), min_size=1, max_size=12
)


@given(domain=part, campaign=st.none() | part, tenant=st.none() | part, routing=st.none() | part)
def test_formatting_then_parsing_gives_back_the_same_parts(
    domain: str, campaign: str | None, tenant: str | None, routing: str | None
) -> None:
    name = QueueName(domain=domain, campaign=campaign, tenant=tenant, routing_domain=routing)
    assert QueueName.parse(name.format()) == name
