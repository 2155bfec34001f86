"""Clients of the apiserver: async REST client, informers, work queue, leader election.

Everything a controller, the scheduler or a node agent needs, importable from here:

    from skiff.client import Client, Controller, InformerFactory, resources

Modules: `kubeconfig` (where the server is, credentials), `resources` (URL
paths), `rest` (the `Client`), `watching` (watch streams), `errors`
(responses → exceptions), `events` (Event recorder), `cache` + `informer` +
`factory` (list/watch caches), `workqueue` + `ratelimit` (keys to reconcile,
retry delays), `controller` (the reconcile loop), `leaderelection`
(Lease-based), `tasks` (guarded tasks).
"""

from skiff.client import resources
from skiff.client.cache import Cache, object_key, split_key
from skiff.client.controller import Controller, RequeueAfter, controller_owner
from skiff.client.errors import ServerUnreachable
from skiff.client.events import EventRecorder
from skiff.client.factory import InformerFactory
from skiff.client.informer import Informer
from skiff.client.kubeconfig import ClientConfig, KubeconfigError, load_kubeconfig
from skiff.client.leaderelection import LeaderElector
from skiff.client.resources import Resource
from skiff.client.rest import Client
from skiff.client.watching import WatchEvent
from skiff.client.workqueue import ShutDown, WorkQueue

__all__ = [
    "Cache",
    "Client",
    "ClientConfig",
    "Controller",
    "EventRecorder",
    "Informer",
    "InformerFactory",
    "KubeconfigError",
    "LeaderElector",
    "RequeueAfter",
    "Resource",
    "ServerUnreachable",
    "ShutDown",
    "WatchEvent",
    "WorkQueue",
    "controller_owner",
    "load_kubeconfig",
    "object_key",
    "resources",
    "split_key",
]
