"""The supervisor of one project as a sans-I/O machine: events in, actions out, time passed in.

``machine`` holds every task's state and decides; ``verdict`` judges probe results;
``taskmuxctl.core.taskorder`` is the one dependency order start, stop, restore and ``taskmux
check`` share; ``messages`` are the events and actions, ``taskspec`` what a task is to it;
``diagram`` draws the transition table for the README. Nothing here reads a clock or touches
a file, a process or tmux: ``taskmuxd.projects.project`` carries the actions out and feeds
back what happened.
"""
