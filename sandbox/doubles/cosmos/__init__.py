"""The Cosmos DB gateway double: the REST protocol the SDK speaks (gateway.py) and its parts.

store.py (containers, feed ranges, change feed), sql.py (the query subset), rbac.py (data-plane
role assignments), control.py (fault injection), testing.py (token issuer and credential for tests).
"""
