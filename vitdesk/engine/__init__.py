"""vitdesk.engine (no Qt)."""
