"""The Kubernetes API server: HTTP app, handler chain, generic store, watch, discovery, OpenAPI, auth."""
