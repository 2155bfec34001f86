"""OCI images: references, building, importing, the bundled registry and a node's local image store.

Shared by the CLI (`skiff image ...`, starting the registry with `skiff server`) and the node
agent (pulling and unpacking images for pods). Below the node and the CLI in the import layers.
"""
