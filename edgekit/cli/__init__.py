"""The `edgekit` command line: `main.py` holds the group, each area adds verbs in its module."""
