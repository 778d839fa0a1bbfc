"""Routing: where a request goes, and how to address each backend.

- ``candidates``: the one ordering of a model's backends that routing and
  admission both use (failover order, weighted within a tier, health first);
- ``health``: what this process learned about each backend (cool-downs, probes);
- ``targets``: the request line and credentials of one attempt to one backend.

Envoy owns the failover itself (retries across the priorities of the model's
cluster); the router stage only picks where the first attempt goes.
"""

from __future__ import annotations

from .candidates import Candidates, weighted_order
from .health import HealthTable, State
from .targets import BackendTarget, Router

__all__ = ["BackendTarget", "Candidates", "HealthTable", "Router", "State", "weighted_order"]
