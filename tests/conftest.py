"""Test-suite wide settings. Area fixtures live in each area's own conftest.py."""
