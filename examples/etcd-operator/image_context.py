"""Make the build context of the operator's image: `python3 image_context.py DIR`, then `skiff image build DIR`.

The image is the built-in `python` image (Debian's Python, no pip) plus kopf and the packages it
needs, plus etcd_operator.py. skiff builds images without RUN, so nothing can be pip-installed
inside the build; instead this script copies kopf and its dependencies, as installed for the
Python that runs it (run it with the Python that has kopf, e.g. the project's .venv), into
DIR/site-packages, and the shared libraries their compiled modules load (beyond libc) into DIR/lib.
The compiled modules fit because the python recipe copies Debian's python3.X for the X that skiff
itself runs on: run this script with skiff's Python. It also writes DIR/Dockerfile (the one next
to it) and copies etcd_operator.py.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOP = "kopf"
LIBC = re.compile(r"^(libc\.so|ld-linux|linux-vdso)")


def requirement_names(dist: importlib.metadata.Distribution) -> list[str]:
    names = []
    for req in dist.requires or []:
        name, _, marker = req.partition(";")
        if "extra" in marker:
            continue
        names.append(re.split(r"[\s<>=!~\[(]", name.strip(), maxsplit=1)[0])
    return names


def closure(top: str) -> list[importlib.metadata.Distribution]:
    """`top` and every distribution it needs (without extras), as installed here."""
    seen: dict[str, importlib.metadata.Distribution] = {}
    todo = [top]
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            if name == top:
                sys.exit(f"{top} is not installed for {sys.executable}: run this with the Python that has it")
            continue  # a dependency for other Pythons only (its marker said so)
        seen[key] = dist
        todo.extend(requirement_names(dist))
    return list(seen.values())


def copy_distribution(dist: importlib.metadata.Distribution, dest: Path) -> list[Path]:
    """Copy the files the distribution installed into site-packages; the compiled modules among them."""
    compiled = []
    for file in dist.files or []:
        parts = Path(str(file)).parts
        if not parts or parts[0] == ".." or "__pycache__" in parts:
            continue  # scripts in bin/, byte-code caches
        source = Path(str(dist.locate_file(file)))
        if not source.is_file():
            continue
        target = dest / Path(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        if target.suffix == ".so":
            compiled.append(source)
    return compiled


def libraries(modules: list[Path]) -> set[Path]:
    """What `ldd` says the compiled modules load, minus libc and its loader (the python image has them)."""
    found: set[Path] = set()
    for module in modules:
        out = subprocess.run(["ldd", str(module)], capture_output=True, text=True).stdout
        for line in out.splitlines():
            m = re.match(r"\s*(\S+) => (/\S+)", line)
            if m and not LIBC.match(m.group(1)):
                found.add(Path(m.group(2)))
    return found


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} DIR  (then: skiff image build DIR -t etcd-operator:0.1)")
    out = Path(sys.argv[1])
    shutil.rmtree(out / "site-packages", ignore_errors=True)
    shutil.rmtree(out / "lib", ignore_errors=True)
    (out / "site-packages").mkdir(parents=True)
    (out / "lib").mkdir()
    compiled = []
    dists = closure(TOP)
    for dist in dists:
        compiled += copy_distribution(dist, out / "site-packages")
    for lib in sorted(libraries(compiled)):
        shutil.copy2(lib.resolve(), out / "lib" / lib.name)
    shutil.copy2(HERE / "Dockerfile", out / "Dockerfile")
    shutil.copy2(HERE / "etcd_operator.py", out / "etcd_operator.py")
    names = ", ".join(sorted(f"{d.metadata['Name']} {d.version}" for d in dists))
    print(f"{out}: {names}; libraries: {', '.join(p.name for p in sorted((out / 'lib').iterdir())) or 'none'}")


if __name__ == "__main__":
    main()
