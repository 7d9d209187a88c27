"""taskmuxd as a machine service: unit and plist rendering, install that converges, control
through systemctl/launchctl.

Stdlib only. ``taskmuxctl.core.daemonprogram`` decides which command the service runs;
``escape`` and ``render`` are pure; ``systemd`` and ``launchd`` are the one door to each
service manager; ``install`` and ``control`` carry out what the commands ask.
"""
