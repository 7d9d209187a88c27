"""``taskmux init``: proposing tasks from what a project folder holds, and writing them."""
