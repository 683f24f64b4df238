"""The application as a whole: what it serves outside the API."""

from __future__ import annotations

import re

from controlplane.services import Services
from tests.controlplane.api_client import api


async def test_the_schema_page_loads_every_asset_from_mtactl_itself(services: Services) -> None:
    async with api(services.settings) as client:
        page = await client.get("/schema")
        assert page.status_code == 200 and "SwaggerUIBundle" in page.text
        html = page.text.split("spec:", 1)[0]  # the page up to the inlined schema, whose texts may name hosts
        assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
        assert len(assets) == 4, assets  # stylesheet, two scripts, favicon
        assert not re.search(r"(?:https?:)?//", html.replace("http://www.w3.org", ""))  # no host but mtactl's
        assert "validatorUrl: null" in page.text  # Swagger UI would send the schema to validator.swagger.io
        for asset in assets:
            response = await client.get(asset)
            assert response.status_code == 200 and len(response.content) > 100, asset
