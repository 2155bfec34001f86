"""OCI images: references, building, importing, the bundled registry and a node's local image store.

Shared by the CLI (`skiff image ...`, starting the registry with `skiff server`) and the node
agent (pulling and unpacking images for pods). Below the node and the CLI in the import layers.

- `reference`: parse `[registry/]repo[:tag][@digest]`; unqualified names go to the cluster registry
- `store`: `ImageStore(root).pull(ref, policy, credentials)` → `Image(rootfs, config)`; list, remove, gc
- `model`: `Image`, `ImageConfig`; `errors`: the typed errors (`ImagePullError` and kin)
- `registry`: `run_registry(data_dir, address)`, the bundled docker-registry as a child process
- `build` + `dockerfile` + `copying`: `build_image` from a Dockerfile subset, no container run
- `recipes` + `python_recipe`: built-in busybox and python images, `ensure_builtin_image`
- `importing`: OCI and docker archives; `remote`: push, exists, list a registry
- `users`: `resolve_user(rootfs, "app:staff")` → uid, gid, supplementary gids, home
- `layout` + `layers`: OCI image layouts and gzip layers written in Python; `tools`: skopeo/umoci runs
"""
