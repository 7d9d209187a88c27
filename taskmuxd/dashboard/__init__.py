"""The web dashboard at ``https://taskmux.localhost``, served by the daemon's own proxy:
``app`` (what each URL answers), ``site`` (HTTP/1.1 over the proxy's TLS), ``security``
(who may do what), ``logview`` (a log's tail and search), ``static/`` (the page)."""
