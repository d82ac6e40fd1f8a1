"""Right-hand tabs of the main window, one module each."""
