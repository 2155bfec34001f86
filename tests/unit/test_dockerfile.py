"""The Dockerfile subset: instructions, continuations, quoting, variables and errors naming the line."""

from __future__ import annotations

import pytest

from skiff.images.dockerfile import expand_word, key_values, parse_dockerfile, split_words
from skiff.images.errors import DockerfileError


def test_instructions_lines_and_continuations() -> None:
    df = parse_dockerfile(
        "# syntax=docker/dockerfile:1\n"
        "ARG BASE=busybox\n"
        "from $BASE AS app\n"
        "\n"
        "COPY --chown=nobody:nogroup --chmod=0755 \\\n"
        "  # a comment inside a continuation\n"
        "  a b /dst/\n"
        'ENV A=1 B="two words"\n'
        'CMD ["sh", "-c", "echo hi"]\n'
        "ENTRYPOINT exec httpd -f\n"
    )
    assert [(i.keyword, i.line) for i in df.instructions] == [
        ("ARG", 2), ("FROM", 3), ("COPY", 5), ("ENV", 8), ("CMD", 9), ("ENTRYPOINT", 10),
    ]  # fmt: skip
    copy = df.instructions[2]
    assert copy.flags == {"chown": "nobody:nogroup", "chmod": "0755"}
    assert split_words(copy.text, {}) == ["a", "b", "/dst/"]
    assert key_values(df, df.instructions[3], {}) == [("A", "1"), ("B", "two words")]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("FROM scratch\nCOPY a /a\nRUN make\n", 3, "RUN is not supported"),
        ("FROM scratch\nADD x.tar /\n", 2, "ADD is not supported"),
        ("FROM scratch\nFROBNICATE x\n", 2, "unknown instruction FROBNICATE"),
        ("COPY a /a\nFROM scratch\n", 1, "first instruction must be FROM"),
        ("FROM scratch\nFROM busybox\n", 2, "multi-stage builds are not supported"),
        ("FROM scratch\nCOPY a\n", 2, "expected COPY SOURCE... DEST"),
        ("FROM scratch\nCOPY --from=build /a /a\n", 2, "unsupported option --from=build"),
        ("FROM scratch\nCOPY --chmod=rwx a /a\n", 2, "--chmod wants an octal mode"),
        ('FROM scratch\n\nCMD ["sh", "-c"\n', 3, "exec form must be a JSON array"),
        ("FROM scratch\nCMD [1, 2]\n", 2, "JSON array of strings"),
        ("FROM scratch\nENV ONLYKEY\n", 2, "expected ENV KEY=VALUE"),
        ("FROM scratch\nLABEL a=1 b\n", 2, "expected KEY=VALUE"),
        ('FROM scratch\nENV A="open\n', 2, "unterminated"),
        ("FROM scratch\nUSER\n", 2, "USER needs an argument"),
        ("FROM a b c d\n", 1, "expected FROM IMAGE"),
    ],
    ids=["run", "add", "unknown", "copy-first", "multi-stage", "copy-one-arg", "copy-from", "chmod", "bad-json",
         "json-ints", "env-key-only", "label-no-value", "quote", "empty-user", "from-words"],
)  # fmt: skip
def test_errors_name_the_line(text: str, line: int, message: str) -> None:
    with pytest.raises(DockerfileError, match=message) as e:
        parse_dockerfile(text, path="ctx/Dockerfile")
    assert e.value.line == line
    assert str(e.value).startswith(f"ctx/Dockerfile:{line}: ")


def test_empty_dockerfile() -> None:
    with pytest.raises(DockerfileError, match="no FROM instruction"):
        parse_dockerfile("# nothing\n\n")


def test_words_quotes_and_variables() -> None:
    env = {"NAME": "world", "EMPTY": ""}
    assert split_words("""a 'b c' "d $NAME" e\\ f""", env) == ["a", "b c", "d world", "e f"]
    assert split_words("'$NAME' \"\\$NAME\" ${NAME}s", env) == ["$NAME", "$NAME", "worlds"]
    assert split_words("${EMPTY:-dflt} ${NAME:-dflt} ${NAME:+set} x${EMPTY:+set}y $UNSET", env) == [
        "dflt", "world", "set", "xy", "",
    ]  # fmt: skip
    assert split_words('"" a', env) == ["", "a"]
    assert split_words("$NAME", env, expand=False) == ["$NAME"]
    assert expand_word('/srv/"my app"/$NAME', env) == "/srv/my app/world"


def test_old_env_form_keeps_spaces() -> None:
    df = parse_dockerfile("FROM scratch\nENV GREETING hello   big $WHO\n")
    assert key_values(df, df.instructions[1], {"WHO": "world"}) == [("GREETING", "hello   big world")]
