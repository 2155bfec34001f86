"""Reading the Dockerfile subset skiff builds, with errors that name the line.

skiff builds images without running containers, so a Dockerfile may only describe files and
settings: `FROM` (scratch or an image in the registry; one stage), `COPY` (with `--chown` and
`--chmod`), `ENV`, `ARG`, `WORKDIR`, `ENTRYPOINT`/`CMD` (exec form `["a", "b"]` or shell form),
`USER`, `LABEL`, `EXPOSE`, `VOLUME`, `STOPSIGNAL`. `RUN`, `ADD` and the rest are refused with a
`DockerfileError` that says why. Lines follow Docker: `#` comments, `\\` continuations, keywords
in any case, `$VAR`/`${VAR}`/`${VAR:-default}`/`${VAR:+alt}` expanded at build time from ARG and
ENV values, single and double quotes as in a shell.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from skiff.images.errors import DockerfileError

SUPPORTED = ("FROM", "COPY", "ENV", "ARG", "WORKDIR", "ENTRYPOINT", "CMD", "USER", "LABEL", "EXPOSE", "VOLUME",
             "STOPSIGNAL")  # fmt: skip
_REFUSED = {
    "RUN": "RUN is not supported: skiff builds images without running containers (put files in place with COPY)",
    "ADD": "ADD is not supported: use COPY for local files (URLs and archive extraction are not available)",
    "HEALTHCHECK": "HEALTHCHECK is not supported: use a Kubernetes livenessProbe or readinessProbe",
    "ONBUILD": "ONBUILD is not supported",
    "SHELL": "SHELL is not supported: shell-form CMD and ENTRYPOINT run /bin/sh -c",
    "MAINTAINER": "MAINTAINER is not supported: use LABEL maintainer=...",
}
_COPY_FLAGS = ("chown", "chmod")
_VAR_RE = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:[-+])(?P<word>[^}]*))?\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)


@dataclass(frozen=True, slots=True)
class Instruction:
    """One instruction: its keyword (upper case), the raw argument text and the line it starts on."""

    keyword: str
    text: str
    line: int
    flags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Dockerfile:
    instructions: tuple[Instruction, ...]
    path: str = "Dockerfile"

    def error(self, instruction: Instruction, message: str) -> DockerfileError:
        return DockerfileError(f"{instruction.keyword}: {message}", line=instruction.line, path=self.path)


def parse_dockerfile(text: str, *, path: str = "Dockerfile") -> Dockerfile:
    """Split a Dockerfile into instructions and check each one's shape (not yet its values)."""
    instructions: list[Instruction] = []
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and pending):
            continue  # comments (also inside a continuation) and blank lines in a continuation
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = (pending + stripped).strip()
        pending = ""
        if whole:
            instructions.append(_instruction(whole, start, path))
    if pending.strip():
        instructions.append(_instruction(pending.strip(), start, path))
    dockerfile = Dockerfile(tuple(instructions), path)
    _check(dockerfile)
    return dockerfile


def _instruction(whole: str, line: int, path: str) -> Instruction:
    keyword, _, rest = whole.partition(" ")
    keyword = keyword.upper()
    rest = rest.strip()
    if keyword in _REFUSED:
        raise DockerfileError(_REFUSED[keyword], line=line, path=path)
    if keyword not in SUPPORTED:
        raise DockerfileError(
            f"unknown instruction {keyword} (supported: {', '.join(SUPPORTED)})", line=line, path=path
        )
    flags: dict[str, str] = {}
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        name, eq, value = flag[2:].partition("=")
        if keyword != "COPY" or name not in _COPY_FLAGS or not eq or not value:
            allowed = " (COPY takes --chown=USER[:GROUP] and --chmod=MODE)" if keyword == "COPY" else ""
            raise DockerfileError(f"{keyword}: unsupported option {flag}{allowed}", line=line, path=path)
        flags[name] = value
        rest = rest.strip()
    if not rest:
        raise DockerfileError(f"{keyword} needs an argument", line=line, path=path)
    return Instruction(keyword, rest, line, flags)


def _check(dockerfile: Dockerfile) -> None:
    seen_from = False
    for ins in dockerfile.instructions:
        try:
            seen_from = _check_one(dockerfile, ins, seen_from)
        except ValueError as e:  # an unterminated quote
            raise dockerfile.error(ins, str(e)) from None
    if not seen_from:
        raise DockerfileError("no FROM instruction (start with FROM scratch or FROM IMAGE)", path=dockerfile.path)


def _check_one(dockerfile: Dockerfile, ins: Instruction, seen_from: bool) -> bool:
    if ins.keyword == "FROM":
        if seen_from:
            raise dockerfile.error(ins, "multi-stage builds are not supported (one FROM per Dockerfile)")
        seen_from = True
        words = split_words(ins.text, {}, expand=False)
        if len(words) == 3 and words[1].lower() == "as":
            words = words[:1]
        if len(words) != 1:
            raise dockerfile.error(ins, "expected FROM IMAGE [AS NAME]")
    elif ins.keyword != "ARG" and not seen_from:
        raise dockerfile.error(ins, "the first instruction must be FROM (only ARG may come before it)")
    elif ins.keyword == "COPY":
        words = exec_form(dockerfile, ins) or split_words(ins.text, {}, expand=False)
        if len(words) < 2:
            raise dockerfile.error(ins, "expected COPY SOURCE... DEST")
        if "chmod" in ins.flags and not re.fullmatch(r"[0-7]{3,4}", ins.flags["chmod"]):
            raise dockerfile.error(ins, f"--chmod wants an octal mode such as 0755, not {ins.flags['chmod']!r}")
    elif ins.keyword in ("ENV", "LABEL"):
        key_values(dockerfile, ins, {}, expand=False)
    elif ins.keyword in ("CMD", "ENTRYPOINT", "VOLUME"):
        exec_form(dockerfile, ins)
    return seen_from


def exec_form(dockerfile: Dockerfile, ins: Instruction) -> list[str] | None:
    """The JSON array of an exec-form instruction, None for shell form; an error for broken JSON."""
    if not ins.text.startswith("["):
        return None
    try:
        value = json.loads(ins.text)
    except json.JSONDecodeError as e:
        raise dockerfile.error(ins, f"exec form must be a JSON array of strings: {e.msg} in {ins.text}") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise dockerfile.error(ins, f"exec form must be a JSON array of strings, not {ins.text}")
    return value


def key_values(
    dockerfile: Dockerfile, ins: Instruction, env: Mapping[str, str], *, expand: bool = True
) -> list[tuple[str, str]]:
    """`K=V K2="v 2"` pairs, or the old `K value with spaces` form of ENV and LABEL."""
    words = split_words(ins.text, env, expand=expand)
    if words and "=" not in words[0]:
        if len(words) < 2:
            raise dockerfile.error(ins, f"expected {ins.keyword} KEY=VALUE ... or {ins.keyword} KEY VALUE")
        rest = ins.text.split(None, 1)[1]
        return [(words[0], expand_word(rest, env) if expand else rest)]
    pairs = []
    for word in words:
        key, eq, value = word.partition("=")
        if not eq or not key:
            raise dockerfile.error(ins, f"expected KEY=VALUE, got {word!r}")
        pairs.append((key, value))
    return pairs


def split_words(text: str, env: Mapping[str, str], *, expand: bool = True) -> list[str]:
    """Shell-like words: whitespace separates, quotes group, backslash escapes, `$VAR` expands."""
    return _lex(text, env, expand=expand, split=True)


def expand_word(text: str, env: Mapping[str, str]) -> str:
    """One value (WORKDIR, USER...): quotes removed and variables expanded, spaces kept."""
    words = _lex(text, env, expand=True, split=False)
    return words[0] if words else ""


def _lex(text: str, env: Mapping[str, str], *, expand: bool, split: bool) -> list[str]:
    words: list[str] = []
    current: list[str] = []
    started = False
    i, n = 0, len(text)
    quote = ""
    while i < n:
        c = text[i]
        if quote == "'":
            if c == "'":
                quote = ""
            else:
                current.append(c)
        elif c == "\\" and i + 1 < n and (not quote or text[i + 1] in '"\\$'):
            current.append(text[i + 1])
            i += 1
        elif c == "$" and expand:
            m = _VAR_RE.match(text, i)
            if m:
                current.append(_substitute(m, env))
                i = m.end()
                started = True
                continue
            current.append(c)
        elif quote == '"':
            if c == '"':
                quote = ""
            else:
                current.append(c)
        elif c in "'\"":
            quote = c
            started = True
        elif c.isspace() and split:
            if current or started:
                words.append("".join(current))
            current, started = [], False
        else:
            current.append(c)
        started = started or bool(current)
        i += 1
    if quote:
        raise ValueError(f"unterminated {quote} quote in {text!r}")
    if current or started:
        words.append("".join(current))
    return words


def _substitute(m: re.Match[str], env: Mapping[str, str]) -> str:
    name = m.group("braced") or m.group("plain")
    value = env.get(name)
    op = m.group("op")
    if op == ":-":
        return value if value else m.group("word")
    if op == ":+":
        return m.group("word") if value else ""
    return value or ""
