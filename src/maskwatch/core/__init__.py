"""The leaf layer: small modules that every other layer may import.

A module here imports nothing from maskwatch outside ``maskwatch.core`` and nothing heavy at import time
(the standard library, numpy and pydantic at most; OpenCV only inside the functions that need it), so that
reading an event, validating a name or redacting a URL never loads a model runtime. ARCHITECTURE.md lists
the layers and ``tests/test_architecture.py`` enforces them.
"""
