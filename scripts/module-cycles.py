#!/usr/bin/env python3
"""Import circles between the modules of a crate.

    scripts/module-cycles.py [CRATE_SRC] [--check]

Every file is a module (`vault.rs` is `vault`, `policy/store.rs` is `policy::store`,
`token/mod.rs` is `token`). A module depends on another when its code (comments and
`#[cfg(test)]` modules left out) names it: `crate::kv::…`, `super::…`, a child's items
re-exported with `pub use child::…`, or a name the crate root re-exports (`crate::Core` is a
reference to `vault`). Prints each strongly connected component of more than one module: a set
of modules that import one another in a circle. With --check it exits 1 when there is one.
CRATE_SRC defaults to crates/core/src.

Why a script and not `cargo modules`: it needs no extra tool and no build (cargo-modules
compiles the crate, and with it RocksDB), and a textual reference is what a reader follows.
"""
import pathlib
import re
import sys

PATH = re.compile(r"\b(crate|super)::((?:[A-Za-z_][A-Za-z0-9_]*::)*)(?:\{([^}]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
CHILD_USE = re.compile(r"^\s*pub(?:\([a-z]+\))? use ([a-z_][a-z0-9_]*)::", re.M)


def module_name(src: pathlib.Path, file: pathlib.Path) -> str:
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return "::".join(parts)


def code_of(file: pathlib.Path) -> str:
    text = file.read_text().split("#[cfg(test)]")[0]
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))


def graph(src: pathlib.Path) -> dict:
    files = {module_name(src, f): f for f in src.rglob("*.rs")}
    modules = set(files) - {""}
    root_names = {}
    if "" in files:
        for module, group, single in re.findall(
            r"pub use ([a-z_][a-z0-9_:]*?)::(?:\{([^}]*)\}|([A-Za-z_][A-Za-z0-9_]*))", code_of(files[""])
        ):
            for name in [single] if single else group.split(","):
                name = name.strip().split(" as ")[-1].strip()
                if name:
                    root_names[name] = module

    def resolve(segments: list) -> str:
        """The longest prefix of `segments` that is a module of the crate."""
        for n in range(len(segments), 0, -1):
            candidate = "::".join(segments[:n])
            if candidate in modules:
                return candidate
        return ""

    edges = {m: set() for m in modules}
    for here in modules:
        code = code_of(files[here])
        parent = here.rsplit("::", 1)[0] if "::" in here else ""
        is_dir_module = files[here].name == "mod.rs"
        for base, prefix, group, single in PATH.findall(code):
            start = [] if base == "crate" else (parent.split("::") if parent else [])
            if base == "super" and is_dir_module:
                start = here.split("::")[:-1]
            mids = [p for p in prefix.split("::") if p]
            tails = [single] if single else [t.strip().split("::")[0] for t in group.split(",") if t.strip()]
            for tail in tails:
                segments = start + mids + [tail]
                target = resolve(segments)
                if not target and len(segments) == 1:
                    target = resolve(root_names.get(tail, "").split("::"))
                if target and target != here and not here.startswith(target + "::"):
                    edges[here].add(target)
        if is_dir_module:
            for child in CHILD_USE.findall(code):
                target = resolve(here.split("::") + [child])
                if target and target != here:
                    edges[here].add(target)
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


def self_test() -> None:
    """The check must be able to fail: a planted circle is found, a clean tree passes, and
    comments, tests and a child's `use super::*` are not dependencies."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        src = pathlib.Path(d)
        (src / "kv").mkdir()
        (src / "lib.rs").write_text("mod a;\nmod b;\nmod kv;\npub use a::Core;\n")
        (src / "a.rs").write_text("use crate::kv::Meta;\npub struct Core;\n")
        (src / "kv" / "mod.rs").write_text("// crate::a::Core is named in a comment only\nmod engine;\npub struct Meta;\n")
        (src / "kv" / "engine.rs").write_text("use super::*;\nuse crate::Core;\n#[cfg(test)]\nuse crate::b::X;\n")
        (src / "b.rs").write_text("pub struct X;\n")
        assert cycles(graph(src)) == [], cycles(graph(src))
        (src / "b.rs").write_text("use crate::a::Core;\npub struct X;\n")
        (src / "a.rs").write_text("use crate::kv::Meta;\nuse crate::b::X;\npub struct Core;\n")
        assert cycles(graph(src)) == [["a", "b"]], cycles(graph(src))
    print("module-cycles self-test: a planted circle is found, a clean tree passes")


def main() -> int:
    if "--self-test" in sys.argv:
        self_test()
        return 0
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
        print(f"no import circles between the {len(edges)} modules of {src}")
    return 1 if found and "--check" in sys.argv else 0


if __name__ == "__main__":
    sys.exit(main())
