"""Remote nodes over SSH: host-key policy, ~/.ssh/config resolution, parallel execution, probing."""
