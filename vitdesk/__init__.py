"""vitdesk: an offline workbench for Vision Transformer transfer learning on CT.

Research use only, not for diagnosis.
"""

__version__ = "0.1.0"

RESEARCH_NOTICE = "Research use only. Not for diagnosis or any clinical decision."
