"""ZoneMTA's acknowledgement check (``admit``) and the model's own rules give the same verdict on every entry.

``admit`` stands in for mapping an entry onto the model on the way in (the projections map it later): it must
refuse exactly the entries whose mirror row ``MessageQueueItem`` would refuse, whatever the input.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.model.observation import check_against_model
from adapters.zonemta.log_source import parse
from adapters.zonemta.mapping import ACTION_STATUS, admit, message_uuid, observe

valid_addresses = st.sampled_from(["a@b.io", "Jane.Doe@Gmail.COM", "x+tag@sub.example.org"])
addresses = st.one_of(
    valid_addresses,
    valid_addresses,
    st.just(""),
    st.just("<>"),
    st.from_regex(r"[a-z.<>@ ]{0,6}@[A-Za-z.<> ]{0,6}", fullmatch=True),
    st.builds(lambda n, d: "x" * n + "@" + d, st.sampled_from([1, 64, 65, 300]), st.sampled_from(["a.io", "B.IO"])),
    st.builds(lambda n: "a@" + "d" * n, st.sampled_from([1, 255, 256, 318])),
    st.text(max_size=8),
)
recipient_lists = st.one_of(addresses, st.lists(valid_addresses, min_size=2, max_size=3).map(",".join))
names = st.one_of(
    st.none(), st.just(""), st.text(max_size=3), st.builds(lambda n: "z" * n, st.sampled_from([100, 101]))
)
message_ids = st.one_of(
    st.none(), st.just(""), st.just("<>"), st.builds(lambda n: "<" + "m" * n + ">", st.sampled_from([10, 996, 997]))
)
replies = st.one_of(
    st.none(),
    st.sampled_from(["250 2.0.0 Ok", "550 5.1.1 unknown", "421 try later", "Network error", "699 9.9.9 x", ""]),
    st.text(max_size=6),
)


@st.composite
def entries(draw: Any) -> dict[str, Any]:
    action = draw(st.sampled_from([*sorted(ACTION_STATUS), "DROP"]))
    entry: dict[str, Any] = {
        "id": draw(st.sampled_from(["18b0879811a00009a2", "x", ""])),
        "action": action,
        "_mtactl": {"node": "mta1", "at": 1_795_414_203_532},
    }
    if action == "DROP" or draw(st.booleans()):
        entry["seq"] = draw(st.sampled_from(["001", "00a", ""]))
    field = "recipient" if action == "DROP" and draw(st.booleans()) else "to"
    entry[field] = draw(recipient_lists)
    entry["from"] = draw(addresses)
    for name, values in (
        ("zone", names),
        ("category", st.sampled_from(["recipient", "rate", "mine", None])),
        ("defcount", st.integers(-2, 3)),
        ("nextattempt", st.just(1_795_418_472_733)),
        ("response", replies),
        ("size", st.integers(-5, 5)),
        ("body", st.integers(-5, 5)),
        ("messageId", message_ids),
        ("message-id", message_ids),
        ("subject", st.text(max_size=5)),
        ("protocol", st.sampled_from(["smtp", "lmtp", "http", "x"])),
        ("reason", st.text(max_size=5)),
    ):
        if draw(st.booleans()):
            entry[name] = draw(values)
    return entry


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries())
def test_admit_refuses_exactly_what_the_model_refuses(raw: dict[str, Any]) -> None:
    try:
        _, parts = parse(json.dumps(raw).encode())
    except (msgspec.ValidationError, ValueError):
        return  # refused before either check: the entry's own shape
    for part in parts:
        observation = observe(part)
        if observation is None:  # not about a queued message (a DROP without seq): nothing to admit
            assert admit(part) is None
            continue
        try:
            check_against_model(observation)
            model_allows = True
        except (msgspec.ValidationError, ValueError):
            model_allows = False
        try:
            admitted = admit(part)
            admit_allows = True
        except ValueError:
            admitted, admit_allows = None, False
        assert admit_allows == model_allows, (raw, part)
        if admitted is not None and observation is not None:
            assert (admitted.message, admitted.domain) == (message_uuid(part), observation.domain)
