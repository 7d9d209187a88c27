"""The Model Context Protocol server (``taskmux mcp``) and its installer (``mcp install``)."""
