"""Thermal and power: node sensors, telemetry, the routing policy, monitor and report."""
