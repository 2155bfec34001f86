"""Serverless functions: the Function kind, the runtime that runs a handler, the gateway that routes,
scales from and to zero and meters every invocation."""
