"""The node agent: the kubelet of skiff, running the pods bound to its node as real containers.

`skiff agent` registers a Node, heartbeats its Lease and watches the pods with
`spec.nodeName=<node>`. Each pod gets a worker (`podworkers`) that syncs the pod's spec with the
runtime's containers (`sync`), level-triggered: sandbox, volumes (`volumes`), images, init
containers in order, containers with restart back-off (`backoff`), then a status
(`podstatus`, pure) patched onto the pod. `podspec` turns a container spec into the runtime's
`ContainerConfig` (pure). `node` builds the Node object from the machine.
"""
