"""Measured studies behind the docs: each module runs one question end to end (``python -m``)."""
