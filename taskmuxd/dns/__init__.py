"""Name resolution for task URLs: taskmux's DNS server, the /etc/hosts block, delegation."""
