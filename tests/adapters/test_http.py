"""Node URLs stay inside MTACTL_NODE_NETWORKS: checked on the address of every connection, not only the URL."""

from __future__ import annotations

import httpx
import pytest

from adapters.http import NodeNetworks, pooled_client
from tests.fake_kumod import FakeKumod, serving


async def test_a_connection_goes_only_to_an_address_inside_the_allowed_networks() -> None:
    kumod = FakeKumod()
    with serving(kumod) as url:
        port = url.rsplit(":", 1)[1]
        allowed = pooled_client(networks=NodeNetworks.parse("127.0.0.0/8"))
        elsewhere = pooled_client(networks=NodeNetworks.parse("10.0.0.0/8, kumod.internal"))
        try:
            assert (await allowed.get(f"http://localhost:{port}/api/check-liveness/v1")).status_code == 200
            for host in ("127.0.0.1", "localhost"):  # an address, and a name resolving outside the networks
                with pytest.raises(httpx.ConnectError, match="outside MTACTL_NODE_NETWORKS"):
                    await elsewhere.get(f"http://{host}:{port}/api/check-liveness/v1")
        finally:
            await allowed.aclose()
            await elsewhere.aclose()
    assert len(kumod.requests) == 1  # nothing was dialled for the refused ones


def test_listed_names_and_networks_are_what_registration_admits() -> None:
    networks = NodeNetworks.parse("10.0.0.0/8,.mta.internal,kumo-9.example")
    assert networks.refusal("http://10.1.2.3:8000") is None
    assert networks.refusal("http://kumo-1.mta.internal:8000") is None
    assert networks.refusal("https://kumo-9.example") is None
    assert networks.refusal("http://169.254.169.254/latest") is not None
    assert networks.refusal("http://[::ffff:127.0.0.1]:8000") is not None
    # An unlisted name is judged by its addresses at each connection (it may resolve inside 10/8)
    assert networks.refusal("http://kumo.other.example") is None
    assert NodeNetworks.parse("kumo-9.example").refusal("http://kumo.other.example") is not None
    assert NodeNetworks.parse(None).refusal("http://anything.example") is None
    with pytest.raises(ValueError, match="neither a network"):
        NodeNetworks.parse("10.0.0.0/8, not a host!")
