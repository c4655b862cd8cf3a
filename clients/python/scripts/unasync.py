"""Write the blocking client from the async one: ``_async_client.py`` -> ``_sync_client.py``.

The async client is the only source. Each line goes through the token replacements below
(``async def`` -> ``def``, ``await`` dropped, ``AsyncClient`` -> ``Client``, ...), the
module docstring is replaced by a note that the file is generated, and the result is
formatted by ruff (dropping ``await`` can let a call fit on one line).

    python clients/python/scripts/unasync.py          # write _sync_client.py
    python clients/python/scripts/unasync.py --check  # fail if it is not up to date

After httpcore's ``scripts/unasync.py``. Like it, a replacement that no line uses is an
error, so that the list stays what the source needs.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "torchlab_client"
SOURCE = PACKAGE / "_async_client.py"
TARGET = PACKAGE / "_sync_client.py"

SUBS = [
    ("A torchlab client for asyncio and trio", "A blocking torchlab client"),
    ("Async([A-Z][A-Za-z0-9_]*)", r"\2"),
    ("async def", "def"),
    ("async with", "with"),
    ("async for", "for"),
    ("await ", ""),
    ("aclose", "close"),
    ("aiter_bytes", "iter_bytes"),
    ("async_sleep", "sleep"),
    ("async_enforced", "enforced"),
    ("__aenter__", "__enter__"),
    ("__aexit__", "__exit__"),
]
COMPILED_SUBS = [(re.compile(r"(^|\b)" + regex + r"($|\b)"), repl) for regex, repl in SUBS]

HEADER = '''\
"""The blocking client, :class:`Client`: :class:`AsyncClient`'s methods, not awaited.

GENERATED from ``_async_client.py`` by ``clients/python/scripts/unasync.py``: do not edit
it, edit the async client and run the script again (``--check`` in ``make lint``).
"""
'''


def unasync(source: str, used: set[int]) -> str:
    """The sync module's text before formatting; records which replacements were used."""
    tree = ast.parse(source)
    first = tree.body[0]
    if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)):
        raise SystemExit(f"{SOURCE.name} must start with its module docstring")
    body = source.splitlines(keepends=True)[first.end_lineno or 0 :]
    lines = []
    for line in body:
        text = line
        for index, (regex, repl) in enumerate(COMPILED_SUBS):
            replaced = regex.sub(repl, text)
            if replaced != text:
                used.add(index)
                text = replaced
        lines.append(text)
    return HEADER + "".join(lines)


def ruff_format(text: str) -> str:
    """``text`` formatted with the ruff settings of the package's folder."""
    result = subprocess.run(  # noqa: S603 (this interpreter's ruff, fixed arguments)
        [sys.executable, "-m", "ruff", "format", "--stdin-filename", str(SOURCE), "-"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"ruff format failed on the generated code:\n{result.stderr}")
    return result.stdout


def generate() -> str:
    """The text ``_sync_client.py`` must have."""
    used: set[int] = set()
    text = unasync(SOURCE.read_text(), used)
    unused = [SUBS[i] for i in range(len(SUBS)) if i not in used]
    if unused:
        raise SystemExit(f"replacements that no line of {SOURCE.name} uses: {unused}")
    return ruff_format(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="fail if the generated file is not up to date"
    )
    options = parser.parse_args()
    expected = generate()
    if not options.check:
        TARGET.write_text(expected)
        print(f"{SOURCE.name} -> {TARGET.name}")
        return 0
    actual = TARGET.read_text() if TARGET.exists() else ""
    if actual == expected:
        return 0
    diff = difflib.unified_diff(
        actual.splitlines(keepends=True),
        expected.splitlines(keepends=True),
        f"{TARGET.name} (checked in)",
        f"{TARGET.name} (from {SOURCE.name})",
    )
    sys.stdout.writelines(list(diff)[:200])
    print(
        f"\n{TARGET.name} is not up to date: run python clients/python/scripts/unasync.py",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
