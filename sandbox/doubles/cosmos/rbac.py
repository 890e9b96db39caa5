"""Cosmos DB data-plane RBAC as the double enforces it.

Each request maps to one data action at one scope; a principal (the token's
`oid`) needs a role assignment whose scope covers the request's and whose
data actions include (or wildcard-match) the action.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

ACCOUNT = "Microsoft.DocumentDB/databaseAccounts"
READ_METADATA = f"{ACCOUNT}/readMetadata"
ITEMS = f"{ACCOUNT}/sqlDatabases/containers/items"
ITEM_READ = f"{ITEMS}/read"
ITEM_CREATE = f"{ITEMS}/create"
ITEM_UPSERT = f"{ITEMS}/upsert"
ITEM_REPLACE = f"{ITEMS}/replace"
ITEM_DELETE = f"{ITEMS}/delete"
EXECUTE_QUERY = f"{ACCOUNT}/sqlDatabases/containers/executeQuery"
READ_CHANGE_FEED = f"{ACCOUNT}/sqlDatabases/containers/readChangeFeed"


@dataclass(frozen=True)
class RoleAssignment:
    """A SQL role assignment: principal object id, scope and the role's data actions."""

    principal_id: str
    scope: str  # "/", "/dbs/<db>" or "/dbs/<db>/colls/<container>"
    data_actions: tuple[str, ...]
    created_at: float = field(default_factory=time.monotonic, compare=False)

    def __post_init__(self) -> None:
        parts = self.scope.strip("/").split("/") if self.scope != "/" else []
        if (
            not self.scope.startswith("/")
            or len(parts) not in (0, 2, 4)
            or (parts and (parts[0] != "dbs" or (len(parts) == 4 and parts[2] != "colls")))
        ):
            raise ValueError(
                f"role assignment scope {self.scope!r} must be '/', '/dbs/<db>' or '/dbs/<db>/colls/<container>'"
            )
        object.__setattr__(self, "data_actions", tuple(self.data_actions))

    def covers_scope(self, scope: str) -> bool:
        mine = self.scope.rstrip("/")
        return mine == "" or scope == mine or scope.startswith(mine + "/")

    def allows(self, action: str) -> bool:
        for granted in self.data_actions:
            if granted == action or granted == "*":
                return True
            if granted.endswith("/*") and action.startswith(granted[:-1]):
                return True
        return False


def forbidden_message(account: str, principal_id: str, action: str, scope: str) -> str:
    """The 403/5301 message real Cosmos DB returns (names the principal and the action)."""
    return (
        f"Request blocked by Auth {account} : Request is blocked because principal [{principal_id}] does not "
        f"have required RBAC permissions to perform action [{action}] on resource [{scope}]. "
        "Learn more: https://aka.ms/cosmos-native-rbac."
    )
