"""The web dashboard (``labgate serve``): flights, logs, history, hosts, branches, bisections,
trends, and a JSON API, server-rendered from the store."""

from labgate.web.app import create_app

__all__ = ["create_app"]
