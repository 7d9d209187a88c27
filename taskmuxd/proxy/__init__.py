"""The HTTPS reverse proxy in front of the tasks."""
