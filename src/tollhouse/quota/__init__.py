"""Admission: per-tenant and organisation token buckets, in memory or on Redis."""
