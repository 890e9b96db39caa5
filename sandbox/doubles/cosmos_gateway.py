"""Moved to sandbox/doubles/cosmos/gateway.py (the gateway double's own package).

Kept only so branches written before the move still import; import from sandbox.doubles.cosmos.gateway.
"""

from sandbox.doubles.cosmos.gateway import *  # noqa: F403
from sandbox.doubles.cosmos.gateway import CosmosGatewayState, RoleAssignment, serve_cosmos  # noqa: F401
