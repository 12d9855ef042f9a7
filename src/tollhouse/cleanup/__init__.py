"""Stale objects: choosing, confirming, deleting with an audit trail; adopting old ones."""
