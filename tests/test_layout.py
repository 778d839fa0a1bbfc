"""The product core stands apart from its tools: ``ext_proc`` (the request path) never imports
``gateway_tools`` (supervisor, mocks, load test, bench, the full CLI), and no module of either
package is caught in an import cycle."""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ext_proc", "gateway_tools")


def _paths(package: str) -> list[Path]:
    return [p for p in sorted((ROOT / package).rglob("*.py")) if p.name != "__main__.py"]


def modules(package: str) -> list[str]:
    """Every importable module of ``package`` (``__main__`` excluded: importing it runs the CLI)."""
    out = []
    for path in _paths(package):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.append(".".join(parts))
    return out


def _is_tools(name: str | None) -> bool:
    return name is not None and (name == "gateway_tools" or name.startswith("gateway_tools."))


def test_ext_proc_never_imports_gateway_tools() -> None:
    offenders = []
    for path in sorted((ROOT / "ext_proc").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):  # module level and inside functions
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module] if node.level == 0 else []
            elif (
                isinstance(node, ast.Call)
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
                and getattr(node.func, "attr", getattr(node.func, "id", None))
                in ("import_module", "__import__")
            ):
                names = [node.args[0].value]
            else:
                continue
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names if _is_tools(n)]
    assert not offenders, "ext_proc must not import gateway_tools:\n" + "\n".join(offenders)


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of both packages it imports anywhere (at module level or in a function).

    ``from . import x`` is an edge to the submodule ``x``, not to the package: a package is always
    initialised before its submodules, so that is no cycle."""
    known = {m: path for p in PACKAGES for m, path in zip(modules(p), _paths(p), strict=True)}
    graph: dict[str, set[str]] = {}
    for mod, path in known.items():
        is_pkg = path.name == "__init__.py"
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                parts = [node.module] if node.module else []
                if node.level:  # relative: from the module's package, one level up per extra dot
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    parts = base[: len(base) - node.level + 1] + parts
                prefix = ".".join(parts)
                subs = [f"{prefix}.{a.name}" for a in node.names if f"{prefix}.{a.name}" in known]
                deps.update(subs if len(subs) == len(node.names) else [prefix, *subs])
        graph[mod] = {d for d in deps if d in known and d != mod}
    return graph


def test_no_import_cycle_even_through_lazy_imports() -> None:
    """The old ``cli -> loadtest -> loadtest.scenarios -> cli`` loop (a lazy import each way) and its like."""
    graph = import_graph()
    assert graph["gateway_tools.cli"] >= {"ext_proc.cli", "gateway_tools.loadtest", "gateway_tools.bench"}
    done: set[str] = set()

    def visit(mod: str, path: list[str]) -> None:
        if mod in path:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(mod) :], mod]))
        if mod in done:
            return
        for dep in sorted(graph[mod]):
            visit(dep, [*path, mod])
        done.add(mod)

    for mod in sorted(graph):
        visit(mod, [])


def test_every_module_imports_first_without_a_cycle() -> None:
    """Each module is imported first into an interpreter holding none of either package, so a cycle
    shows up whichever module a user or a subprocess starts from; importing all of ext_proc loads no
    gateway_tools module."""
    names = [m for p in PACKAGES for m in modules(p)]
    assert "gateway_tools.mocks.server" in names and "ext_proc.server" in names
    script = f"""
import importlib, sys, traceback
ours = {PACKAGES!r}
failed = []
for name in {names!r}:
    for loaded in [m for m in sys.modules if m.split(".")[0] in ours]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + ": " + traceback.format_exc(limit=-3))
for loaded in [m for m in sys.modules if m.split(".")[0] in ours]:
    del sys.modules[loaded]
for name in {modules("ext_proc")!r}:
    importlib.import_module(name)
tools = sorted(m for m in sys.modules if m.split(".")[0] == "gateway_tools")
if tools:
    failed.append("importing ext_proc loaded " + ", ".join(tools))
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _commands(parser: argparse.ArgumentParser) -> list[str]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(sub.choices)


def test_commands_split_between_product_and_tools() -> None:
    from ext_proc import cli as product
    from gateway_tools import cli as tools

    assert _commands(product.build_parser()) == ["check", "render-envoy", "serve"]
    assert _commands(tools.build_parser()) == sorted(
        [
            "up",
            "apply",
            "status",
            "check",
            "render-envoy",
            "serve",
            "mock-providers",
            "simulate-pool",
            "loadtest",
            "bench",
            "plan",
        ]
    )
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^llm-gateway = "gateway_tools\.cli:main"$', pyproject, re.M)
    include = re.search(r"^\[tool\.setuptools\.packages\.find\]\ninclude = (\[.*\])$", pyproject, re.M)
    assert include and {'"ext_proc*"', '"gateway_tools*"'} <= {x.strip() for x in include[1][1:-1].split(",")}
