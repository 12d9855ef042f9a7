"""Usage and cost per tenant for a period: read from the ledger, priced, rendered."""
