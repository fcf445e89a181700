"""How the code is laid out: the experiments' modules import each other without cycles.

A cycle between two programs' modules makes which copy of a class is raised depend on which module ran as
`__main__` (an `except` clause then misses the other copy), and it hides which module owns what.

    python tests/test_layout.py        # prints the import graph of experiments/ and any cycle
"""
import ast
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]


def imported_modules(path, package):
    """The modules of `package` that the Python file at `path` imports anywhere in it (also inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package if node.level else (node.module or "")
            if node.level and node.module:
                base = f"{package}.{node.module}"
            # `from package import a, b` imports modules a and b; `from package.a import f` imports a.
            names = [f"{base}.{alias.name}" for alias in node.names] if base == package else [base]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == package and len(parts) > 1:
                found.add(parts[1])
    return found


def import_graph(folder):
    """module -> the modules of the same package it imports, for every .py file directly in `folder`."""
    folder = pathlib.Path(folder)
    modules = {path.stem: path for path in sorted(folder.glob("*.py")) if path.stem != "__init__"}
    return {name: sorted(imported_modules(path, folder.name) & set(modules) - {name})
            for name, path in modules.items()}


def find_cycle(graph):
    """One import cycle of `graph` as a list of modules, first repeated last ([a, b, a]), or None."""
    state = {}  # module -> "open" while on the current path, "done" when all it reaches is cycle-free

    def visit(module, path):
        state[module] = "open"
        for target in graph.get(module, ()):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target, path + [target])
                if cycle:
                    return cycle
        state[module] = "done"
        return None

    for module in graph:
        if module not in state:
            cycle = visit(module, [module])
            if cycle:
                return cycle
    return None


def test_experiments_have_no_import_cycles():
    graph = import_graph(REPO / "experiments")
    assert "figures" in graph and "image_figures" in graph["figures"]  # the graph sees the package's imports
    cycle = find_cycle(graph)
    assert cycle is None, f"experiments/ imports in a cycle: {' -> '.join(cycle)}"


def test_a_cycle_is_found_also_through_imports_inside_functions(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg import b\n")
    (package / "b.py").write_text("from pkg.c import helper\n")
    (package / "c.py").write_text("def helper():\n    from pkg import a\n")
    (package / "d.py").write_text("import pkg.a\nfrom . import c\n")
    graph = import_graph(package)
    assert graph == {"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a", "c"]}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    (package / "c.py").write_text("def helper():\n    pass\n")
    assert find_cycle(import_graph(package)) is None


if __name__ == "__main__":
    experiments_graph = import_graph(REPO / "experiments")
    for name, targets in experiments_graph.items():
        print(f"{name}: {', '.join(targets) or '-'}")
    found = find_cycle(experiments_graph)
    print(f"cycle: {' -> '.join(found)}" if found else "no import cycle")
