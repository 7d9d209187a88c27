"""``taskmuxctl doctor``: ``gather`` collects facts about the machine (all the I/O),
``checks`` judges them (pure functions, one per concern, each with a fix hint)."""
