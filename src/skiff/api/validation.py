"""Kubernetes name, label and object-metadata rules, with Kubernetes' exact messages.

Clients (and tests written against real clusters) match on these strings, so they
are copied from k8s.io/apimachinery: `util/validation` for DNS names,
`api/validate/content` for label keys and values (which count bytes), and
`api/validation.ValidateObjectMeta` for metadata. The `is_*` checks return a list
of messages (empty = valid); the `validate_*` functions return
(causeType, fieldPath, message) triples ready for `errors.field_error()`, where the
message is Kubernetes' `field.Error.ErrorBody()` (`Invalid value: "x": ...`).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Mapping
from typing import Any

FieldErrors = list[tuple[str, str, str]]
NameValidator = Callable[[str], list[str]]
"""A metadata.name rule: name -> messages (empty = valid)."""

DNS1123_LABEL_MAX_LENGTH = 63
DNS1123_SUBDOMAIN_MAX_LENGTH = 253
LABEL_VALUE_MAX_LENGTH = 63
QUALIFIED_NAME_MAX_LENGTH = 63
TOTAL_ANNOTATION_SIZE_LIMIT = 256 * 1024

_DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character"
)
_DNS1123_SUBDOMAIN_FMT = _DNS1123_LABEL_FMT + "(\\." + _DNS1123_LABEL_FMT + ")*"
_DNS1123_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character"
)
_QNAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_QNAME_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character"
)
_LABEL_VALUE_FMT = "(" + _QNAME_FMT + ")?"
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character"
)

_DNS1123_LABEL_RE = re.compile(_DNS1123_LABEL_FMT)
_DNS1123_SUBDOMAIN_RE = re.compile(_DNS1123_SUBDOMAIN_FMT)
_QNAME_RE = re.compile(_QNAME_FMT)
_LABEL_VALUE_RE = re.compile(_LABEL_VALUE_FMT)

GENERATE_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_GENERATED_SUFFIX_LENGTH = 5
_MAX_GENERATED_PREFIX = 63 - _GENERATED_SUFFIX_LENGTH


def regex_error(msg: str, fmt: str, *examples: str) -> str:
    """Kubernetes `RegexError` (with its double space after each example's comma)."""
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    shown = " or ".join(f"'{e}', " for e in examples)
    return f"{msg} (e.g. {shown}regex used for validation is '{fmt}')"


def _max_len_chars(n: int) -> str:
    return f"must be no more than {n} characters"


def _max_len_bytes(n: int) -> str:
    return f"must be no more than {n} bytes"


def _size(value: str) -> int:
    return len(value.encode("utf-8"))


def _full(regex: re.Pattern[str], value: str) -> bool:
    return regex.fullmatch(value) is not None


def is_dns1123_label(value: str) -> list[str]:
    errs = []
    if _size(value) > DNS1123_LABEL_MAX_LENGTH:
        errs.append(_max_len_chars(DNS1123_LABEL_MAX_LENGTH))
    if not _full(_DNS1123_LABEL_RE, value):
        if _full(_DNS1123_SUBDOMAIN_RE, value):
            errs.append("must not contain dots")
        else:
            errs.append(regex_error(_DNS1123_LABEL_MSG, _DNS1123_LABEL_FMT, "my-name", "123-abc"))
    return errs


def _dns1123_subdomain(value: str, max_len: Callable[[int], str]) -> list[str]:
    errs = []
    if _size(value) > DNS1123_SUBDOMAIN_MAX_LENGTH:
        errs.append(max_len(DNS1123_SUBDOMAIN_MAX_LENGTH))
    if not _full(_DNS1123_SUBDOMAIN_RE, value):
        errs.append(regex_error(_DNS1123_SUBDOMAIN_MSG, _DNS1123_SUBDOMAIN_FMT, "example.com"))
    return errs


def is_dns1123_subdomain(value: str) -> list[str]:
    return _dns1123_subdomain(value, _max_len_chars)


def is_qualified_name(value: str) -> list[str]:
    """A label key / annotation key / finalizer: `[prefix/]name` (Kubernetes `IsLabelKey`)."""
    errs: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs.extend("prefix part " + m for m in _dns1123_subdomain(prefix, _max_len_bytes))
    else:
        return [
            "a valid label key "
            + regex_error(_QNAME_MSG, _QNAME_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errs.append("name part must be non-empty")
    elif _size(name) > QUALIFIED_NAME_MAX_LENGTH:
        errs.append("name part " + _max_len_bytes(QUALIFIED_NAME_MAX_LENGTH))
    if not _full(_QNAME_RE, name):
        errs.append("name part " + regex_error(_QNAME_MSG, _QNAME_FMT, "MyName", "my.name", "123-abc"))
    return errs


def is_valid_label_value(value: str) -> list[str]:
    errs = []
    if _size(value) > LABEL_VALUE_MAX_LENGTH:
        errs.append(_max_len_bytes(LABEL_VALUE_MAX_LENGTH))
    if not _full(_LABEL_VALUE_RE, value):
        errs.append(regex_error(_LABEL_VALUE_MSG, _LABEL_VALUE_FMT, "MyValue", "my_value", "12345"))
    return errs


def is_valid_path_segment_name(name: str) -> list[str]:
    """Names that only have to be safe in a URL path segment (e.g. RBAC roles)."""
    if name in (".", ".."):
        return [f"may not be '{name}'"]
    return [f"may not contain '{c}'" for c in ("/", "%") if c in name]


def mask_trailing_dash(name: str) -> str:
    """Kubernetes' maskTrailingDash, applied to a generateName before checking it as a name."""
    return name[:-2] + "a" if len(name) > 1 and name.endswith("-") else name


# Name validators for `validate_object_meta` (Kubernetes' ValidateNameFunc without the prefix flag).
dns1123_subdomain: NameValidator = is_dns1123_subdomain
"""metadata.name of most kinds (max 253)."""
dns1123_label: NameValidator = is_dns1123_label
"""metadata.name of namespaces, services (max 63)."""
path_segment_name: NameValidator = is_valid_path_segment_name
"""metadata.name of kinds that only need URL safety (e.g. RBAC roles)."""


def generate_name(prefix: str) -> str:
    """Kubernetes' SimpleNameGenerator: prefix (cut to 58) + 5 random chars."""
    base = prefix[:_MAX_GENERATED_PREFIX]
    return base + "".join(random.choices(GENERATE_NAME_ALPHABET, k=_GENERATED_SUFFIX_LENGTH))


# -- field errors --------------------------------------------------------------------------------


def render_value(value: Any) -> str:
    """A bad value as Go's field errors print it (strings quoted, []string{...} for string lists)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "[]string{" + ", ".join(json.dumps(v, ensure_ascii=False) for v in value) + "}"
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def invalid(path: str, value: Any, detail: str) -> tuple[str, str, str]:
    return ("FieldValueInvalid", path, f"Invalid value: {render_value(value)}: {detail}")


def required(path: str, detail: str = "") -> tuple[str, str, str]:
    return ("FieldValueRequired", path, "Required value" + (f": {detail}" if detail else ""))


def forbidden(path: str, detail: str) -> tuple[str, str, str]:
    return ("FieldValueForbidden", path, f"Forbidden: {detail}")


def too_long(path: str, max_bytes: int) -> tuple[str, str, str]:
    unit = "byte" if max_bytes == 1 else "bytes"
    return ("FieldValueTooLong", path, f"Too long: may not be more than {max_bytes} {unit}")


FIELD_MANAGER_MAX_LENGTH = 128


def validate_field_manager(value: str, path: str = "fieldManager") -> FieldErrors:
    """Kubernetes' `ValidateFieldManager`: at most 128 bytes, every character printable (Go's
    `unicode.IsPrint`; positions are byte offsets, as Go ranges over a string)."""
    errs: FieldErrors = []
    if len(value.encode()) > FIELD_MANAGER_MAX_LENGTH:
        errs.append(too_long(path, FIELD_MANAGER_MAX_LENGTH))
    offset = 0
    for char in value:
        if not char.isprintable():
            errs.append(invalid(path, value, f"invalid character U+{ord(char):04X} (at position {offset})"))
        offset += len(char.encode())
    return errs


def not_supported(path: str, value: Any, supported: list[str]) -> tuple[str, str, str]:
    quoted = ", ".join(json.dumps(s) for s in supported)
    return (
        "FieldValueNotSupported",
        path,
        f"Unsupported value: {render_value(value)}: supported values: {quoted}",
    )


def validate_labels(labels: Any, path: str = "metadata.labels") -> FieldErrors:
    if labels is None:
        return []
    if not isinstance(labels, Mapping):
        return [invalid(path, labels, "must be a map of string keys to string values")]
    errs: FieldErrors = []
    for key, value in labels.items():
        errs.extend(invalid(path, key, m) for m in is_qualified_name(key))
        if not isinstance(value, str):
            errs.append(invalid(path, value, "label values must be strings"))
            continue
        errs.extend(invalid(path, value, m) for m in is_valid_label_value(value))
    return errs


def validate_annotations(annotations: Any, path: str = "metadata.annotations") -> FieldErrors:
    if annotations is None:
        return []
    if not isinstance(annotations, Mapping):
        return [invalid(path, annotations, "must be a map of string keys to string values")]
    errs: FieldErrors = []
    total = 0
    for key, value in annotations.items():
        # Qualified-name rules, but case does not matter.
        errs.extend(invalid(path, key, m) for m in is_qualified_name(key.lower()))
        total += _size(key) + (_size(value) if isinstance(value, str) else 0)
    if total > TOTAL_ANNOTATION_SIZE_LIMIT:
        errs.append(too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT))
    return errs


def validate_owner_references(refs: Any, path: str = "metadata.ownerReferences") -> FieldErrors:
    if refs is None:
        return []
    if not isinstance(refs, list):
        return [invalid(path, refs, "must be a list")]
    errs: FieldErrors = []
    controller = ""
    for ref in refs:
        if not isinstance(ref, Mapping):
            errs.append(invalid(path, ref, "must be an object"))
            continue
        api_version = str(ref.get("apiVersion") or "")
        parts = api_version.split("/") if api_version and api_version != "/" else []
        version = parts[-1] if len(parts) in (1, 2) else ""
        if not version:
            errs.append(invalid(f"{path}.apiVersion", api_version, "version must not be empty"))
        for field in ("kind", "name", "uid"):
            if not ref.get(field):
                errs.append(invalid(f"{path}.{field}", str(ref.get(field) or ""), "must not be empty"))
        if version == "v1" and len(parts) == 1 and ref.get("kind") == "Event":
            errs.append(invalid(path, dict(ref), "/v1, Kind=Event is disallowed from being an owner"))
        if ref.get("controller") is True:
            current = f"{ref.get('kind', '')}/{ref.get('name', '')}"
            if controller:
                errs.append(
                    invalid(
                        path,
                        refs,
                        "Only one reference can have Controller set to true. "
                        f'Found "true" in references for {controller} and {current}',
                    )
                )
            else:
                controller = current
    return errs


def validate_finalizers(finalizers: Any, path: str = "metadata.finalizers") -> FieldErrors:
    if finalizers is None:
        return []
    if not isinstance(finalizers, list):
        return [invalid(path, finalizers, "must be a list of strings")]
    errs: FieldErrors = []
    for finalizer in finalizers:
        if not isinstance(finalizer, str):
            errs.append(invalid(path, finalizer, "must be a string"))
            continue
        errs.extend(invalid(path, finalizer, m) for m in is_qualified_name(finalizer))
    if "orphan" in finalizers and "foregroundDeletion" in finalizers:
        errs.append(invalid(path, finalizers, "finalizer orphan and foregroundDeletion cannot be both set"))
    return errs


def validate_object_meta(
    meta: Any, *, namespaced: bool, name_validator: NameValidator, path: str = "metadata"
) -> FieldErrors:
    """Kubernetes `ValidateObjectMeta`, run after generateName has been expanded into name."""
    if not isinstance(meta, Mapping):
        return [required(path)] if meta is None else [invalid(path, meta, "must be an object")]
    errs: FieldErrors = []
    generate = meta.get("generateName") or ""
    if generate:
        messages = name_validator(mask_trailing_dash(generate))
        errs.extend(invalid(f"{path}.generateName", generate, m) for m in messages)
    name = meta.get("name") or ""
    if not name:
        errs.append(required(f"{path}.name", "name or generateName is required"))
    else:
        errs.extend(invalid(f"{path}.name", name, m) for m in name_validator(name))
    namespace = meta.get("namespace") or ""
    if namespaced:
        if not namespace:
            errs.append(required(f"{path}.namespace"))
        else:
            errs.extend(invalid(f"{path}.namespace", namespace, m) for m in is_dns1123_label(namespace))
    elif namespace:
        errs.append(forbidden(f"{path}.namespace", "not allowed on this type"))
    generation = meta.get("generation")
    if isinstance(generation, int) and generation < 0:
        errs.append(invalid(f"{path}.generation", generation, "must be greater than or equal to 0"))
    errs.extend(validate_labels(meta.get("labels"), f"{path}.labels"))
    errs.extend(validate_annotations(meta.get("annotations"), f"{path}.annotations"))
    errs.extend(validate_owner_references(meta.get("ownerReferences"), f"{path}.ownerReferences"))
    errs.extend(validate_finalizers(meta.get("finalizers"), f"{path}.finalizers"))
    return errs


_SELECTOR_OPERATORS = ["In", "NotIn", "Exists", "DoesNotExist"]


def validate_label_selector(selector: Any, path: str) -> FieldErrors:
    """Kubernetes `ValidateLabelSelector` for a `metav1.LabelSelector` field (e.g. spec.selector)."""
    if selector is None:
        return []
    if not isinstance(selector, Mapping):
        return [invalid(path, selector, "must be an object")]
    errs: FieldErrors = []
    for i, expr in enumerate(selector.get("matchExpressions") or []):
        p = f"{path}.matchExpressions[{i}]"
        if not isinstance(expr, Mapping):
            errs.append(invalid(p, expr, "must be an object"))
            continue
        op, values = expr.get("operator"), expr.get("values") or []
        if op in ("In", "NotIn"):
            if not values:
                errs.append(required(f"{p}.values", "must be specified when `operator` is 'In' or 'NotIn'"))
        elif op in ("Exists", "DoesNotExist"):
            if values:
                errs.append(
                    forbidden(
                        f"{p}.values", "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
                    )
                )
        else:
            errs.append(not_supported(f"{p}.operator", op or "", _SELECTOR_OPERATORS))
        key = str(expr.get("key") or "")
        errs.extend(invalid(f"{p}.key", key, m) for m in is_qualified_name(key))
        for j, value in enumerate(values if isinstance(values, list) else []):
            errs.extend(invalid(f"{p}.values[{j}]", value, m) for m in is_valid_label_value(str(value)))
    errs.extend(validate_labels(selector.get("matchLabels"), f"{path}.matchLabels"))
    return errs
