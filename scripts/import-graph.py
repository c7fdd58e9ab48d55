#!/usr/bin/env python3
"""The file-level import graph of a Rust crate, and its cycles.

Reads every `src/**/*.rs` of a crate (default: crates/router), finds the
references one file makes to another (`use crate::a::b`, `crate::a::b::c`
in expressions, `use super::x`, `super::x::y`, and a parent's `use child::`
or `child::item`), and prints:

  - the edges, one file and the files it refers to per line;
  - the strongly connected components (Tarjan) of more than one file: the
    import cycles. A two-file component is a module and its child talking
    both ways (or a pair that must be read together); anything larger is a
    knot to untie.

Comments and `#[cfg(test)]` modules are skipped by default (test code may
reach anywhere); `--tests` counts them. Re-exports in lib.rs (`pub use
x::Y`) are followed: `crate::Y` counts as a reference to x's file, and
lib.rs's own `pub use` lines are not edges (they are the facade, not a
dependency).

Standard library only. Usage:
    scripts/import-graph.py [--tests] [--dot] [crate_dir]
Exit status: 0, or 1 when a component has more than two files (for CI).
"""

import os
import re
import sys


def strip_comments_and_strings(text):
    """Removes comments; string and char literals become empty strings."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'r(#*)"', text[i:])
            end = text.find('"' + m.group(1), i + len(m.group(0)))
            out.append('""')
            i = n if end < 0 else end + 1 + len(m.group(1))
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""')
            i = j + 1
        elif c == "'":
            # A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            m = re.match(r"'(\\.[^']*|[^\\'])'", text[i:i + 12])
            if m:
                out.append("' '")
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def strip_test_modules(text):
    """Removes `#[cfg(test)] mod x { ... }` blocks (text without comments or strings)."""
    while True:
        m = re.search(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", text)
        if not m:
            return text
        depth, i = 1, m.end()
        while i < len(text) and depth:
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
            i += 1
        text = text[:m.start()] + text[i:]


def module_files(src):
    """Maps module paths (tuples) to files relative to src."""
    mods = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(root, f), src)
            parts = rel[:-3].split(os.sep)
            if parts == ["lib"] or parts == ["main"]:
                path = ()
            elif parts[-1] == "mod":
                path = tuple(parts[:-1])
            else:
                path = tuple(parts)
            mods[path] = rel
    return mods


def expand_use_tree(prefix, tree):
    """`a::{b, c::{d, e}}` -> ['a::b', 'a::c::d', 'a::c::e'] (tree: text after `use`)."""
    tree = tree.strip()
    m = re.match(r"^(.*?)\{(.*)\}$", tree, re.S)
    if not m:
        return [prefix + tree.split(" as ")[0].strip()]
    head, body = m.group(1), m.group(2)
    items, depth, cur = [], 0, ""
    for ch in body:
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    items.append(cur)
    out = []
    for it in items:
        if it.strip():
            out += expand_use_tree(prefix + head, it)
    return out


def references(text, here, mods, children):
    """The module paths a file's text refers to (here: its own module path)."""
    paths = []
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        paths += expand_use_tree("", m.group(1))
    # Paths in expressions and types: crate::a::b, super::a, self::a.
    paths += re.findall(r"(?<![\w:])((?:crate|super|self)(?:::\w+)+)", text)
    # A parent naming its child module directly: `child::item`.
    for child in children.get(here, ()):
        paths += re.findall(r"(?<![\w:])(%s(?:::\w+)+)" % re.escape(child), text)
    out = []
    for p in paths:
        seg = [s for s in p.replace(" ", "").split("::") if s]
        if not seg:
            continue
        if seg[0] == "crate":
            base, seg = [], seg[1:]
        elif seg[0] == "super":
            base = list(here)
            while seg and seg[0] == "super":
                base, seg = base[:-1], seg[1:]
        elif seg[0] == "self":
            base, seg = list(here), seg[1:]
        elif seg[0] in children.get(here, ()):
            base = list(here)
        else:
            continue
        out.append((tuple(base), seg))
    return out


def resolve(base, seg, mods, reexports):
    """The file that the longest module prefix of base+seg names."""
    full = list(base) + list(seg)
    for k in range(len(full), -1, -1):
        if tuple(full[:k]) in mods:
            if k == 0 and full and full[0] in reexports:
                return reexports[full[0]]
            return mods[tuple(full[:k])]
    return None


def tarjan(nodes, edges):
    index, low, stack, on, sccs = {}, {}, [], set(), []
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                strong(w)
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
            sccs.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            strong(v)
    return sccs


def main(argv):
    tests = "--tests" in argv
    dot = "--dot" in argv
    args = [a for a in argv if not a.startswith("--")]
    crate = args[0] if args else "crates/router"
    src = os.path.join(crate, "src")
    mods = module_files(src)
    children = {}
    for path in mods:
        if path:
            children.setdefault(path[:-1], set()).add(path[-1])
    texts = {}
    for path, rel in mods.items():
        with open(os.path.join(src, rel), encoding="utf-8") as f:
            t = strip_comments_and_strings(f.read())
        texts[path] = t if tests else strip_test_modules(t)
    # lib.rs re-exports: `pub use a::B;` makes crate::B a reference to a's file.
    reexports = {}
    lib = texts.get((), "")
    for m in re.finditer(r"\bpub\s+use\s+([^;]+);", lib):
        for p in expand_use_tree("", m.group(1)):
            seg = p.split("::")
            target = resolve((), seg[:-1], mods, {})
            if target and seg[-1] != "*":
                reexports[seg[-1]] = target
    edges = {}
    for path, rel in mods.items():
        text = texts[path]
        if path == ():
            text = re.sub(r"\bpub\s+use\s+[^;]+;", "", text)
        for base, seg in references(text, path, mods, children):
            target = resolve(base, seg, mods, reexports)
            if target and target != rel:
                edges.setdefault(rel, set()).add(target)
    nodes = sorted(mods.values())
    if dot:
        print("digraph imports {")
        for v in nodes:
            for w in sorted(edges.get(v, ())):
                print(f'  "{v}" -> "{w}";')
        print("}")
        return 0
    print(f"# file-level imports of {src} ({len(nodes)} files, tests {'counted' if tests else 'skipped'})")
    for v in nodes:
        print(f"{v} -> {', '.join(sorted(edges.get(v, ()))) or '(nothing)'}")
    sccs = [c for c in tarjan(nodes, edges) if len(c) > 1]
    sccs.sort(key=lambda c: (-len(c), c))
    print()
    print(f"# strongly connected components of more than one file: {len(sccs)}")
    for c in sccs:
        print(f"{len(c)}: {' '.join(c)}")
    big = max((len(c) for c in sccs), default=0)
    print(f"# largest: {big} files")
    return 1 if big > 2 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
