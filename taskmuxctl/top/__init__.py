"""``taskmux top``: the live full-screen view (``app``, Textual) and what it shows (``model``,
standard library only)."""
