"""The `skiff` command."""
