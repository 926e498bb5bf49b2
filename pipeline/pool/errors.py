"""Errors of the pool layer."""
from __future__ import annotations

from pipeline.core.errors import ObcpError


class PoolError(ObcpError):
    """A pool operation got bad input (sizes, ids, classes, answers)."""


class PoolInvariantError(PoolError):
    """A pool state violates one or more invariants; the message lists every violation."""


class PoolFileError(PoolError):
    """A pool file is missing, unreadable or lacks the pool columns."""
