"""Revisioned key-value storage behind the apiserver: one interface, SQLite and etcd backends."""
