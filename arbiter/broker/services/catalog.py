"""The own services the broker serves, by name."""

from __future__ import annotations

from arbiter.broker.services.base import OwnService
from arbiter.broker.services.chain import ChainService
from arbiter.broker.services.explain import ExplainService
from arbiter.broker.services.route import RouteService
from arbiter.broker.services.state import StateService
from arbiter.broker.services.status import StatusService

OWN_SERVICES: dict[str, OwnService] = {
    s.name: s for s in (RouteService(), ExplainService(), StatusService(), ChainService(), StateService())
}
