"""Decoding checks, defaulting and validation every write passes before storage.

The order follows the Kubernetes API server: the body must be the kind the
URL names (missing apiVersion/kind are filled in, as the real decoder does),
unknown fields are handled per `fieldValidation`, defaults are applied, then
metadata and kind-specific validation; any failure is a Status error and
nothing is written. Virtual kinds (access reviews) are answered here too.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import orjson

from skiff.api import defaults, errors, schema, structural, structural_defaults, validation
from skiff.apiserver.registry import ResourceType

if TYPE_CHECKING:
    from skiff.apiserver.options import WriteOptions

Obj = dict[str, Any]
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


def _private_copy(body: Obj) -> Obj:
    """A deep copy; through orjson (several times faster) when the body is plain JSON, as request bodies are."""
    try:
        copied: Obj = orjson.loads(orjson.dumps(body))
    except TypeError:  # orjson.JSONEncodeError: not plain JSON (big ints, non-str keys...)
        return copy.deepcopy(body)
    return copied


def check_type_meta(rt: ResourceType, body: Any) -> Obj:
    """A private copy of `body`, with apiVersion/kind checked against the URL's kind."""
    if not isinstance(body, dict):
        raise errors.BadRequest(f"the body of the request was not a JSON object: expected a {rt.kind}")
    obj = _private_copy(body)
    api_version = obj.get("apiVersion") or rt.api_version
    kind = obj.get("kind") or rt.kind
    if api_version != rt.api_version:
        raise errors.BadRequest(
            f"the API version in the data ({api_version}) does not match the expected API version ({rt.api_version})"
        )
    if kind != rt.kind:
        raise errors.BadRequest(
            f'{kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
            f"the kind in the data ({kind}) does not match the kind of the URL ({rt.kind})"
        )
    obj["apiVersion"], obj["kind"] = api_version, kind
    meta = obj.setdefault("metadata", {})
    if not isinstance(meta, dict):
        raise errors.BadRequest(
            f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
            "metadata must be an object"
        )
    return obj


# ObjectMeta's maps and lists are `omitempty` in Go: once emptied they are neither stored nor shown
OMIT_EMPTY_META = ("labels", "annotations", "finalizers", "ownerReferences", "managedFields")


def omit_empty_metadata(obj: Obj) -> None:
    meta = obj["metadata"]
    for key in OMIT_EMPTY_META:
        if key in meta and not meta[key]:
            del meta[key]


def schema_name(rt: ResourceType) -> str | None:
    name = rt.extra.get("schema_name") or rt.schema_ref
    return str(name) if name else None


def default_and_validate_schema(rt: ResourceType, obj: Obj, opts: WriteOptions, *, patched: bool = False) -> None:
    """Type errors -> 400; unknown fields per fieldValidation (and pruned); then defaults.

    A strict error on a request body (create, update) carries the decoder's prefix
    `Deployment in version "v1" cannot be handled as a Deployment: `; on a patch it does not.
    """
    structural_schema = rt.extra.get("structural")
    name = schema_name(rt)
    if name is None and structural_schema is None:
        return
    if opts.field_validation not in ("Strict", "Warn", "Ignore", ""):
        raise errors.BadRequest(
            f'fieldValidation: Unsupported value: "{opts.field_validation}": '
            'supported values: "Ignore", "Strict", "Warn"'
        )
    if structural_schema is not None:  # a custom resource: prune, report, default, then validate
        meta = schema.validate(obj["metadata"], schema.compiled(OBJECT_META), prune=True)
        if meta.decode_errors:
            raise errors.BadRequest(meta.decode_message(rt.kind, rt.version))
        unknown = [f"metadata.{path}" for path in meta.unknown]
        unknown += structural_defaults.prune(obj, structural_schema)
        _report_unknown(rt, obj, opts, unknown, patched=patched)
        structural_defaults.apply_defaults(obj, structural_schema)
        found = structural.validate(obj, structural_schema)
        if found:
            raise invalid(rt, obj, found)
        return
    assert name is not None
    compiled = rt.extra.get("compiled_schema") or schema.compiled(name)
    result = schema.validate(obj, compiled, prune=opts.field_validation != "Strict")
    if result.decode_errors:
        raise errors.BadRequest(result.decode_message(rt.kind, rt.version))
    _report_unknown(rt, obj, opts, result.unknown, patched=patched)
    defaults.apply_defaults(rt.api_version, rt.kind, obj)
    if result.invalid:
        raise invalid(rt, obj, result.invalid)


def _report_unknown(rt: ResourceType, obj: Obj, opts: WriteOptions, unknown: list[str], *, patched: bool) -> None:
    """Unknown fields per fieldValidation: Strict refuses them (400), Warn warns, Ignore drops them silently."""
    if not unknown:
        return
    described = [f'unknown field "{path}"' for path in unknown]
    if opts.field_validation == "Strict":
        message = "strict decoding error: " + ", ".join(described)
        if not patched:
            message = f'{obj["kind"]} in version "{rt.version}" cannot be handled as a {rt.kind}: {message}'
        raise errors.BadRequest(message)
    if opts.field_validation in ("Warn", ""):
        opts.warnings.extend(described)


def invalid(rt: ResourceType, obj: Obj, errs: list[tuple[str, str, str]]) -> errors.Invalid:
    name = (obj.get("metadata") or {}).get("name") or ""
    return errors.field_error(rt.kind, name, errs, group=rt.group)


def validate(rt: ResourceType, obj: Obj, kind_errors: list[tuple[str, str, str]]) -> None:
    """Metadata rules for every kind plus the kind's own; raises 422 Invalid listing all."""
    strategy = rt.strategy
    name_validator = strategy.name_validator if strategy else validation.dns1123_subdomain
    errs = validation.validate_object_meta(
        obj["metadata"], namespaced=rt.namespaced, name_validator=name_validator
    )
    errs.extend(kind_errors)
    if errs:
        raise invalid(rt, obj, errs)


def answer_virtual(rt: ResourceType, obj: Obj, user: Any) -> Obj:
    """Create on a kind that is never stored: reviews answered about the requesting user."""
    name = getattr(user, "name", "system:anonymous")
    groups = list(getattr(user, "groups", ()))
    admin = "system:masters" in groups
    if rt.kind == "SelfSubjectAccessReview":
        status: Obj = {"allowed": admin}
        if admin:
            status["reason"] = "user is a member of system:masters"
        obj["status"] = status
    elif rt.kind == "SelfSubjectRulesReview":
        rules = [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}] if admin else []
        non_resource = [{"verbs": ["*"], "nonResourceURLs": ["*"]}] if admin else []
        obj["status"] = {"resourceRules": rules, "nonResourceRules": non_resource, "incomplete": False}
    elif rt.kind == "SelfSubjectReview":
        info: Obj = {"username": name, "groups": groups}
        uid = getattr(user, "uid", "")
        if uid:
            info["uid"] = uid
        obj["status"] = {"userInfo": info}
    obj["metadata"].setdefault("creationTimestamp", None)
    return obj
