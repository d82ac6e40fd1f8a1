"""vitdesk.report (no Qt): self-contained HTML and PDF reports from plain results.

``vitdesk.report.data.ReportData`` holds already-computed results;
``vitdesk.report.build.write_report(data, out_dir, forbidden=...)`` writes
``report.html`` and ``report.pdf``. Every page says "Research use only, not for
diagnosis". Import the submodules directly; this package imports nothing heavy.
"""
