"""vitdesk.analysis (no Qt)."""
