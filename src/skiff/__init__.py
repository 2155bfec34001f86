"""skiff: a container orchestrator in Python that speaks the Kubernetes API."""

__version__ = "0.1.0"
