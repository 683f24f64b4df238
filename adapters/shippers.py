"""Log shippers: one command per MTA, each reading that MTA's own log files on its host and posting them to mtactl.
The CLI adds them to its ``ship`` group without naming any MTA."""

from __future__ import annotations

import click

from adapters.kumomta.shipper import kumomta_logs

SHIP_COMMANDS: tuple[click.Command, ...] = (kumomta_logs,)
