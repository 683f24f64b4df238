"""Everything that follows the event log: the message mirror and the per-minute rollups (and, in later issues,
policies, analytics and webhooks), each a ``Projection`` run by ``ProjectionService``."""

from __future__ import annotations

from controlplane.policies.projection import PolicyMatchProjection
from controlplane.projections.base import Projection
from controlplane.projections.mirror import MirrorProjection
from controlplane.projections.rollups import RollupProjection
from controlplane.projections.suppressions import SuppressionProjection
from controlplane.settings import Settings


def standard_projections(settings: Settings | None = None) -> list[Projection]:
    """Every projection mtactl keeps, in the order a pass runs them (``settings``: their thresholds)."""
    return [MirrorProjection(), RollupProjection(), PolicyMatchProjection(), SuppressionProjection(settings)]
