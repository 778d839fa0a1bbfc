"""Admission control: tenant budgets, provider quotas, priorities, adaptive limits.

``build(cfg)`` returns the ``Admission`` the router stage consults (None when
nothing is budgeted). See ``controller`` for the flow, ``store`` and
``redis_store`` for where budgets live, ``estimate`` for token estimates.
"""

from __future__ import annotations

from .controller import Admission, Rejection, Ticket, build

__all__ = ["Admission", "Rejection", "Ticket", "build"]
