"""Culprit search: the pure engine (``engine``) and the ``labgate bisect`` porcelain (``cli``)."""
