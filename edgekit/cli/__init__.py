"""The `edgekit` command line. `main.py` holds the group; each area adds its verbs in its own module."""
