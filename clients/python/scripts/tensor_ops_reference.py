"""Write the ``/tensor/ops`` reference from the service's OpenAPI document, so that it cannot
drift from the service: the README's table of ops and their parameters (the section between
``<!-- generated:tensor-ops -->`` and ``<!-- end:tensor-ops -->``) and the client's typed
step builder, ``torchlab_client/ops.py``.

    python clients/python/scripts/tensor_ops_reference.py          # rewrite both
    python clients/python/scripts/tensor_ops_reference.py --check  # fail if either is stale

Run it from the repository root with the service installed: it reads
``service.main.create_app().openapi()``. A test keeps both files up to date.
"""

from __future__ import annotations

import argparse
import difflib
import json
import keyword
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
README = ROOT / "README.md"
OPS_MODULE = ROOT / "clients" / "python" / "torchlab_client" / "ops.py"
SECTION = "tensor-ops"

Schema = dict[str, Any]


def openapi() -> Schema:
    """The service's OpenAPI document."""
    sys.path.insert(0, str(ROOT))
    from service.main import create_app  # noqa: PLC0415 (the service is imported on demand)

    document: Schema = create_app().openapi()
    return document


def steps(document: Schema) -> list[tuple[str, Schema]]:
    """(op, schema of its step) of every op, in the order of the request schema."""
    components = document["components"]["schemas"]
    items = components["TensorOpsRequest"]["properties"]["steps"]["items"]
    mapping = items["discriminator"]["mapping"]
    by_ref = {ref: op for op, ref in mapping.items()}
    return [
        (by_ref[ref["$ref"]], components[ref["$ref"].rsplit("/", 1)[-1]]) for ref in items["oneOf"]
    ]


def parameters(step: Schema) -> list[tuple[str, Schema, bool]]:
    """(name, schema, required) of a step's parameters, ``op`` and ``out`` left out; the
    required ones first, each group in the schema's order."""
    required = set(step.get("required", ()))
    fields = [
        (n, s, n in required) for n, s in step["properties"].items() if n not in {"op", "out"}
    ]
    return [f for f in fields if f[2]] + [f for f in fields if not f[2]]


def _is_tensor(schema: Schema) -> bool:
    return schema.get("$ref", "").endswith("/Tensor")


def _members(schema: Schema) -> list[Schema]:
    return list(schema["anyOf"]) if "anyOf" in schema else [schema]


# --- Python annotations ------------------------------------------------------------------------


def annotation(schema: Schema) -> str:
    """The Python type of a parameter (without ``| None`` for optional ones)."""
    members = _members(schema)
    if any(_is_tensor(m) for m in members):
        return "TensorRef"
    enums = [value for m in members for value in m.get("enum", ())]
    types: list[str] = []
    if enums:
        if {"float32", "FP32"} <= set(enums):
            types.append("DType")
        else:
            types.append("Literal[" + ", ".join(repr(v) for v in enums) + "]")
    for member in members:
        kind = member.get("type")
        if "enum" in member or kind == "null":
            continue
        if kind == "array":
            types.append(f"Sequence[{annotation(member.get('items', {}))}]")
        else:
            types.append({"integer": "int", "number": "float", "boolean": "bool"}.get(kind, "str"))
    if "float" in types and "int" in types:
        types.remove("int")
    return " | ".join(dict.fromkeys(types)) or "Any"


def _default(schema: Schema, python: bool = False) -> str | None:
    """The default as JSON writes it (as Python does with ``python``), or None."""
    if "default" not in schema:
        return None
    return repr(schema["default"]) if python else json.dumps(schema["default"])


def _text(schema: Schema) -> str:
    return " ".join(str(schema.get("description", "")).split())


def function(op: str, step: Schema) -> str:
    """The builder of one op's step."""
    name = f"{op}_" if keyword.iskeyword(op) else op
    params = parameters(step)
    signature = [f"{p}: {annotation(s)}" for p, s, required in params if required]
    optional = [f"{p}: {annotation(s)} | None = None" for p, s, required in params if not required]
    signature += ["*", *optional, "out: str | None = None"]
    lines = [f"def {name}({', '.join(signature)}) -> Step:"]
    width = 100 - 4
    doc = [*textwrap.wrap('"""' + _text(step).replace("`", "``"), width), "", "Args:"]
    for p, s, required in params:
        default = _default(s, python=True)
        extra = "" if required or default is None else f" Default: ``{default}``."
        text = f"    {p}: {_text(s).replace('`', '``')}{extra}"
        doc += textwrap.wrap(text, width, subsequent_indent=" " * 8)
    doc += ['    out: The name the result is stored under. Default: ``"out"``.', '"""']
    lines += [f"    {line}" if line else "" for line in doc]
    fields = ", ".join(f'"{p}": {p}' for p, _, _ in params)
    lines.append(f'    return _step("{op}", {{{fields}{", " if fields else ""}"out": out}})')
    return "\n".join(lines)


MODULE_HEADER = '''\
"""Steps of ``POST /tensor/ops``, one typed function per op, with the service's parameter
names: ``ops.matmul("a", "b", out="c")`` is ``{"op": "matmul", "x": "a", "y": "b", "out":
"c"}``. Parameters left None are not sent (the service's defaults apply); a tensor
parameter takes a name (an input or an earlier ``out``) or an inline array.

    import torchlab_client as tl
    from torchlab_client import ops

    client.tensor_ops(
        [ops.arange(16, out="t"), ops.reshape("t", [4, 4], out="t"), ops.matmul("t", "t")],
    )

GENERATED from the service's OpenAPI document by
``clients/python/scripts/tensor_ops_reference.py``: do not edit it, run the script again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, TypeAlias

Step: TypeAlias = dict[str, Any]
"""One step of a program, as ``tensor_ops`` sends it."""
TensorRef: TypeAlias = Any
"""A name (an input or an earlier step's ``out``) or an inline tensor (an array, nested
lists); where the service says so, also a number."""
'''


def module(document: Schema) -> str:
    """The text of ``ops.py`` (before formatting)."""
    ops = steps(document)
    dtypes: list[str] = []
    tensor_fields: set[str] = set()
    list_fields: set[str] = set()
    for _, step in ops:
        for name, schema, _ in parameters(step):
            members = _members(schema)
            if any(_is_tensor(m) for m in members):
                tensor_fields.add(name)
            items = schema.get("items", {})
            if schema.get("type") == "array" and any(_is_tensor(m) for m in _members(items)):
                list_fields.add(name)
            enums = [value for member in members for value in member.get("enum", ())]
            if {"float32", "FP32"} <= set(enums):
                dtypes += [value for value in enums if value not in dtypes]
    parts = [
        MODULE_HEADER,
        "DType: TypeAlias = Literal[" + ", ".join(repr(d) for d in dtypes) + "]",
        '"""A dtype name: torch\'s or the Open Inference Protocol\'s."""',
        "",
        "PARAMETERS: dict[str, tuple[str, ...]] = {",
        *[
            f"    {op!r}: (" + "".join(f"{p!r}, " for p, _, _ in parameters(step)) + "'out'),"
            for op, step in ops
        ],
        "}",
        '"""Each op\'s parameters (``out`` last), the ops in the order of the schema."""',
        "OPS: tuple[str, ...] = tuple(PARAMETERS)",
        '"""Every op the service runs."""',
        f"TENSOR_FIELDS = frozenset({sorted(tensor_fields)!r})",
        '"""Parameters that hold one tensor (a name or an inline array)."""',
        f"TENSOR_LIST_FIELDS = frozenset({sorted(list_fields)!r})",
        '"""Parameters that hold a list of tensors."""',
        "",
        "",
        "def _step(op: str, fields: dict[str, Any]) -> Step:",
        '    """The step, its parameters left None not sent."""',
        "    sent = {key: value for key, value in fields.items() if value is not None}",
        '    return {"op": op, **sent}',
        *[f"\n\n{function(op, step)}" for op, step in ops],
        "",
    ]
    return "\n".join(parts)


def ruff_format(text: str, path: Path) -> str:
    """``text`` formatted (and its imports sorted) with the repository's ruff settings."""
    for command in (["check", "--select", "I", "--fix"], ["format"]):
        result = subprocess.run(  # noqa: S603 (this interpreter's ruff, fixed arguments)
            [sys.executable, "-m", "ruff", *command, "--stdin-filename", str(path), "-"],
            input=text,
            capture_output=True,
            text=True,
            check=False,
            cwd=ROOT,
        )
        if result.returncode != 0:
            raise SystemExit(f"ruff {command[0]} failed on the generated code:\n{result.stderr}")
        text = result.stdout
    return text


# --- the README's table ------------------------------------------------------------------------


def kind(schema: Schema) -> str:
    """A parameter's type in words, for the table."""
    members = _members(schema)
    words: list[str] = []
    if any(_is_tensor(m) for m in members):
        words.append("tensor")
    enums = [value for m in members for value in m.get("enum", ())]
    if {"float32", "FP32"} <= set(enums):
        words.append("dtype")
    elif enums:
        words.append(" / ".join(f"`{v}`" for v in enums))
    for member in members:
        type_ = member.get("type")
        if "enum" in member or type_ in (None, "null") or (type_ == "string" and "tensor" in words):
            continue
        if type_ == "array":
            words.append(f"[{kind(member.get('items', {}))}]")
        else:
            words.append(
                {"integer": "int", "number": "number", "boolean": "bool"}.get(type_, "str")
            )
    if "number" in words and "int" in words:
        words.remove("int")
    if "tensor" in words and "number" in words:
        words.remove("number")
        words[words.index("tensor")] = "tensor or number"
    return " or ".join(dict.fromkeys(words))


def table(document: Schema) -> str:
    """The README's table: each op, what it computes, and its parameters."""
    rows = [
        "| op | what it computes | parameters (required first; `name = default`) |",
        "|---|---|---|",
    ]
    for op, step in steps(document):
        cells = []
        for name, schema, required in parameters(step):
            default = _default(schema)
            text = f"`{name}` {kind(schema)}"
            if not required:
                text += f" = `{default}`" if default is not None else " = `null`"
            cells.append(text)
        what = _text(step).replace("|", "\\|")
        rows.append(f"| `{op}` | {what} | {', '.join(cells) or '—'} |")
    return "\n".join(rows)


def render_readme(readme: str, document: Schema) -> str:
    """``readme`` with the section ``tensor-ops`` written anew."""
    pattern = re.compile(
        rf"(<!-- generated:{SECTION} -->\n)(?:.*?\n)?(<!-- end:{SECTION} -->)", flags=re.DOTALL
    )
    if not pattern.search(readme):
        raise SystemExit(f"{README.name} has no section <!-- generated:{SECTION} -->")
    return pattern.sub(lambda m: m.group(1) + table(document) + "\n" + m.group(2), readme)


def expected() -> dict[Path, str]:
    """The text each generated file must have."""
    document = openapi()
    return {
        OPS_MODULE: ruff_format(module(document), OPS_MODULE),
        README: render_readme(README.read_text(encoding="utf-8"), document),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a file is not up to date")
    options = parser.parse_args()
    stale = 0
    for path, text in expected().items():
        actual = path.read_text(encoding="utf-8") if path.exists() else ""
        if actual == text:
            continue
        if not options.check:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
            continue
        stale += 1
        diff = difflib.unified_diff(
            actual.splitlines(keepends=True), text.splitlines(keepends=True), str(path), "expected"
        )
        sys.stdout.writelines(list(diff)[:100])
        print(f"\n{path.relative_to(ROOT)} is not up to date: run {Path(__file__).name}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
