"""Project-owned doubles for services with no local implementation.

Each double behaves like the real service on what matters to the worker and
can say no: wrong issuer/subject/audience, expiry, missing RBAC, throttling.
"""
