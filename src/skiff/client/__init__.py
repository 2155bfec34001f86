"""Clients of the apiserver: async REST client, informers, work queue, leader election."""
