"""vitdesk.data (no Qt)."""
