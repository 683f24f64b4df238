"""Every MTA driver, by the node kind it serves (as saq's ``Queue.from_url`` picks a backend by URL scheme).

Adding an MTA is adding its package's ``DRIVER`` here; the control plane finds it by a node's ``kind``.
"""

from __future__ import annotations

from adapters.base import UnsupportedOperation
from adapters.driver import MtaDriver
from adapters.fake import DRIVER as FAKE
from adapters.kumomta.driver import DRIVER as KUMOMTA
from adapters.zonemta.driver import DRIVER as ZONEMTA

DRIVERS: dict[str, MtaDriver] = {driver.kind: driver for driver in (KUMOMTA, ZONEMTA, FAKE)}


def driver_for(kind: str) -> MtaDriver:
    """The driver of a node's kind; ``UnsupportedOperation`` when mtactl has none."""
    driver = DRIVERS.get(kind)
    if driver is None:
        raise UnsupportedOperation(f"no driver for MTA kind {kind!r}")
    return driver
