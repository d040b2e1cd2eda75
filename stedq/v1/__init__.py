"""Generated stedq.v1 API modules (built from proto/stedq/v1 by setup.py)."""
