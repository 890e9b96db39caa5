"""Who may query the backup with SQL, and the limits of those queries: the analytics part of a stack's config.

Config keys (flat in the stack file, gathered into this model by config.py):

=====================  ===============================================================================
analystPrincipals      IAM role ARNs (SSO permission-set roles or account roles) trusted by the read-only
                       analyst role; none by default (then no analyst role is declared)
athenaScanLimitGb      bytes scanned per query before Athena cancels it, in GB (1..10000; default 10)
athenaResultsDays      days Athena query results are kept before lifecycle expires them (1..365; default 7)
=====================  ===============================================================================

The catalog itself (Glue database, two tables per exported container, the Athena workgroup) follows the
worker setting `currentState` (the tables exist only when the worker writes them). Pure, tested without mocks.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from .operators_config import principal_problem

SCAN_LIMIT_GB = (1, 10_000)
RESULTS_DAYS = (1, 365)
#: Where Athena writes query results: outside the export prefix, so no worker role can touch them.
RESULTS_PREFIX = "athena-results"


def glue_name(text: str) -> str:
    """A Glue/Athena identifier: lower case letters, digits and underscores (Athena lower-cases names anyway)."""
    return re.sub(r"[^a-z0-9_]", "_", text.lower())


class AnalyticsConfig(BaseModel):
    """Like config.py's sections: field names are the config keys in snake_case."""

    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)

    analyst_principals: list[str] = []
    athena_scan_limit_gb: int = Field(default=10, ge=SCAN_LIMIT_GB[0], le=SCAN_LIMIT_GB[1])
    athena_results_days: int = Field(default=7, ge=RESULTS_DAYS[0], le=RESULTS_DAYS[1])

    @field_validator("analyst_principals")
    @classmethod
    def _principals(cls, v: list[str]) -> list[str]:
        problems = [f"{p!r} {problem}" for p in v if (problem := principal_problem(p))]
        if problems:
            raise ValueError("; ".join(problems))
        if len(set(v)) != len(v):
            raise ValueError("lists a principal more than once; list each once")
        return sorted(v)

    @property
    def bytes_scanned_cutoff(self) -> int:
        return self.athena_scan_limit_gb * 1_000_000_000

    def problems(self, *, current_state: bool) -> list[tuple[str, Any, str]]:
        """Rules across this model and the rest of the stack: (config key, bad value, message with the fix)."""
        if self.analyst_principals and not current_state:
            return [
                (
                    "analystPrincipals",
                    self.analyst_principals,
                    "trust an analyst role, but currentState is false, so the worker writes no tables to "
                    "query: set currentState to true or remove analystPrincipals",
                )
            ]
        return []


#: What an analyst may do in Athena: run, watch, stop and read queries of the workgroup; nothing else. One
#: home: the analyst role's policy (components/analytics.py) and the deployers' boundary cap
#: (bootstrap/deployer.py) both take this list.
ATHENA_QUERY_ACTIONS = [
    "athena:BatchGetQueryExecution",
    "athena:GetQueryExecution",
    "athena:GetQueryResults",
    "athena:GetQueryResultsStream",
    "athena:GetWorkGroup",
    "athena:ListQueryExecutions",
    "athena:StartQueryExecution",
    "athena:StopQueryExecution",
]
#: The Glue reads of the stack's database and tables (the analyst role's, and the boundary's cap).
GLUE_READ_ACTIONS = [
    "glue:GetDatabase",
    "glue:GetDatabases",
    "glue:GetPartition",
    "glue:GetPartitions",
    "glue:GetTable",
    "glue:GetTables",
]
