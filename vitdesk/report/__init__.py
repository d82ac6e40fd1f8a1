"""vitdesk.report (no Qt)."""
