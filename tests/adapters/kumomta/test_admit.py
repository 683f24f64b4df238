"""The acknowledgement path's check (``admit``) and the model's own rules give the same verdict on every record.

``admit`` replaces mapping a record onto the model on the way in (the projections map it later): it must refuse
exactly the records whose mirror row ``MessageQueueItem`` would refuse, whatever the input.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.kumomta.events import record_decoder
from adapters.kumomta.mapping import RECORD_STATUS, admit, message_uuid, observe
from adapters.model.observation import check_against_model

valid_addresses = st.sampled_from(["a@b.io", "Jane.Doe@Gmail.COM", "x+tag@sub.example.org"])
addresses = st.one_of(
    valid_addresses,
    valid_addresses,
    st.just(""),
    st.from_regex(r"[a-z.<>@ ]{0,6}@[A-Za-z.<> ]{0,6}", fullmatch=True),
    st.builds(lambda n, d: "x" * n + "@" + d, st.sampled_from([1, 64, 65, 300]), st.sampled_from(["a.io", "B.IO"])),
    st.builds(lambda n: "a@" + "d" * n, st.sampled_from([1, 255, 256, 318])),
    st.text(max_size=8),
)
names = st.one_of(
    st.none(), st.just(""), st.text(max_size=3), st.builds(lambda n: "c" * n, st.sampled_from([100, 101]))
)
enhanced = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {
            "class": st.sampled_from([2, 3, 4, 5, 9]),
            "subject": st.sampled_from([-1, 0, 7, 999, 1000, 1234]),
            "detail": st.sampled_from([-3, 0, 1, 999, 1000]),
        }
    ),
)
headers = st.one_of(
    st.none(),
    st.dictionaries(
        st.sampled_from(["Message-ID", "message-id", "MESSAGE-ID", "Subject"]),
        st.one_of(st.integers(), st.builds(lambda n: "<" + "m" * n + ">", st.sampled_from([0, 10, 996, 997, 2000]))),
        max_size=3,
    ),
)


@st.composite
def records(draw: Any) -> dict[str, Any]:
    campaign, tenant = draw(names), draw(names)
    prefix = f"{campaign or ''}:{tenant or ''}@" if draw(st.booleans()) else ""
    record: dict[str, Any] = {
        "type": draw(st.sampled_from(sorted(RECORD_STATUS))),
        "id": draw(st.sampled_from(["0123456789abcdef0123456789abcdef", "x"])),
        "sender": draw(addresses),
        "recipient": draw(addresses),
        "queue": (prefix + draw(st.sampled_from(["gmail.com", "d.io!route.io"])))[:255],
        "timestamp": 1_795_422_600,
        "size": draw(st.integers(-5, 5)),
        "num_attempts": draw(st.integers(-2, 3)),
        "meta": draw(st.fixed_dictionaries({"campaign": names, "tenant": st.one_of(names, st.integers())})),
        "egress_pool": draw(names),
        "headers": draw(headers),
        "response": draw(
            st.one_of(
                st.none(),
                st.fixed_dictionaries(
                    {"code": st.sampled_from([99, 250, 451, 550, 600]), "content": st.text(max_size=5)},
                    optional={"enhanced_code": enhanced},
                ),
            )
        ),
    }
    return record


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records())
def test_admit_refuses_exactly_what_the_model_refuses(raw: dict[str, Any]) -> None:
    try:
        record = record_decoder.decode(json.dumps(raw))
    except msgspec.ValidationError:
        return  # refused before either check: bounds of the record itself
    for part in record.per_recipient():
        try:
            observation = observe(part)
            assert observation is not None
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
            assert (admitted.message, admitted.domain, admitted.tenant_id, admitted.campaign_id) == (
                message_uuid(part),
                observation.domain,
                observation.tenant_id,
                observation.campaign_id,
            )
