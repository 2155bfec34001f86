"""The node's container runtime: pod sandboxes (netns + CNI), OCI bundles and containers on runc.

The agent drives it through `skiff.node.runtime.runtime.Runtime`. This package file stays empty on
purpose: the per-container shim runs as `python -m skiff.node.runtime.shim` and must start fast.
"""
