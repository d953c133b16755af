#!/usr/bin/env python3
"""Import circles between the top-level modules of a crate.

    scripts/module-cycles.py [CRATE_SRC] [--check]

Reads every `crate::<module>` reference (in `use` lines and in paths) of the crate's source,
builds the graph "module A refers to module B" between top-level modules (`vault.rs`,
`rotation/…` is `rotation`), and prints each strongly connected component of more than one
module: a set of modules that import one another in a circle. With --check it exits 1 when
there is one. CRATE_SRC defaults to crates/core/src.

Why a script and not `cargo modules`: it needs no extra tool and no build (cargo-modules
compiles the crate, and with it RocksDB), and a textual `crate::x` reference is exactly what
a reader follows. It does not see `super::` references into a sibling, which the crates avoid
across top-level modules.
"""
import pathlib
import re
import sys

REF = re.compile(r"\bcrate::(?:\{([^}]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def module_of(src: pathlib.Path, file: pathlib.Path) -> str:
    rel = file.relative_to(src)
    name = rel.parts[0]
    return name[:-3] if name.endswith(".rs") else name


def reexports(src: pathlib.Path) -> dict:
    """Names the crate root re-exports (`pub use vault::{Core, ...}`), by the module they live in:
    `crate::Core` is a reference to `vault`."""
    lib = src / "lib.rs"
    if not lib.exists():
        return {}
    out = {}
    for module, group, single in re.findall(r"pub use ([a-z_][a-z0-9_]*)::(?:\{([^}]*)\}|([A-Za-z_][A-Za-z0-9_]*))", lib.read_text()):
        for name in ([single] if single else group.split(",")):
            name = name.strip().split(" as ")[-1].strip()
            if name:
                out[name] = module
    return out


def graph(src: pathlib.Path) -> dict:
    modules = {module_of(src, f) for f in src.rglob("*.rs")} - {"lib", "main"}
    names = reexports(src)
    edges = {m: set() for m in modules}
    for f in src.rglob("*.rs"):
        here = module_of(src, f)
        if here not in edges:
            continue
        text = f.read_text()
        # Test modules may reach anywhere; they are not part of the dependency structure.
        text = text.split("#[cfg(test)]")[0]
        for group, single in REF.findall(text):
            refs = [single] if single else [n.strip().split("::")[0] for n in group.split(",")]
            for n in refs:
                n = names.get(n, n)
                if n in modules and n != here:
                    edges[here].add(n)
    return edges


def cycles(edges: dict) -> list:
    """Tarjan's strongly connected components, those of two modules or more."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    args = [a for a in sys.argv[1:] if a != "--check"]
    src = pathlib.Path(args[0] if args else "crates/core/src")
    edges = graph(src)
    found = cycles(edges)
    for comp in found:
        print(f"circle of {len(comp)} modules: {', '.join(comp)}")
        for m in comp:
            inner = sorted(edges[m] & set(comp))
            print(f"  {m} -> {', '.join(inner)}")
    if not found:
        print(f"no import circles between the {len(edges)} top-level modules of {src}")
    return 1 if found and "--check" in sys.argv else 0


if __name__ == "__main__":
    sys.exit(main())
