"""The small pieces that run ON a node (installed there in the node runtime by `deploy`):
the process supervisor used where there is no systemd, the Ray worker launcher and the agent."""
