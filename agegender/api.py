"""`from agegender.api import analyze`: the Python API's public path (it lives in serve/)."""

from agegender.serve.api import Analyzer, analyze

__all__ = ["Analyzer", "analyze"]
