"""API keys as tenants: who is calling (keys.py), what they may spend (limits.py) and the
middleware that answers for both (middleware.py). Files, batches and the embedding cache are
partitioned by the caller's name (`current_tenant`)."""

from gateway.tenancy.keys import ANONYMOUS, KeyRing, Tenant, current_tenant, tenant_of

__all__ = ["ANONYMOUS", "KeyRing", "Tenant", "current_tenant", "tenant_of"]
