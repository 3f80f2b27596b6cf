"""Glance: self-hosted semantic search for photo libraries. The `glance` command lives in glance/cli.py."""
__version__ = "0.4.0"
