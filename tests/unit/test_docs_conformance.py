"""docs/conformance.md must not go stale silently.

The map pairs every row of RFC 9293's requirement summary (Appendix B, kept as
``docs/rfc9293-requirements.tsv``) with the tests that prove it or a reason.  These checks fail
when a row goes missing or is duplicated, when a cited ``tests/...::test_name`` no longer exists
(a rename, a deleted test), when a "proved" row cites nothing, when the strict-xfail table and
the strict xfails of ``tests/unit/test_tcp_conformance.py`` disagree (an XPASS fixed without
updating the map, or the reverse), or when the summary counts no longer add up.  Test functions
are found with ``ast``: nothing is imported, so the live tests' names are checked without root.
"""
from __future__ import annotations

import ast
import csv
import re
from collections import Counter
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "conformance.md"
TSV = ROOT / "docs" / "rfc9293-requirements.tsv"
CONFORMANCE_TESTS = "tests/unit/test_tcp_conformance.py"

STATUSES = ("proved", "partial", "not implemented", "not applicable")
#: the RFC table's levels, grouped as the summary groups them
LEVEL_GROUP = {"MUST": "MUST", "MUST NOT": "MUST", "SHOULD": "SHOULD", "SHOULD NOT": "SHOULD", "MAY": "MAY"}

_ROW = re.compile(r"^\| ((?:MUST|SHLD|MAY|REC)-\d+) \| ([^|]+?) \| ([^|]+?) \| ([^|]+?) \| (.*) \|$")
_CITE = re.compile(r"`(tests/[\w/.-]+\.py)::(\w+)`")


def _requirements() -> list[tuple[str, str, str, str]]:
    """(category, id, level, requirement) per TSV row; the RFC's footnote mark "^1" is dropped."""
    with TSV.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [(r["category"], r["id"], r["level"], r["requirement"].replace("^1", "")) for r in rows]


def _map_rows() -> list[dict[str, str]]:
    """The requirement rows of the map, each with the ``## `` section it stands in."""
    rows = []
    section = ""
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
            continue
        m = _ROW.match(line)
        if m:
            rid, level, req, status, proof = (g.strip() for g in m.groups())
            rows.append({"category": section, "id": rid, "level": level, "requirement": req,
                         "status": status, "proof": proof})
    return rows


def _status(row: dict[str, str]) -> str:
    """The row's status word (a status may carry a qualifier: "proved, with Linux's batching")."""
    for s in STATUSES:
        if row["status"] == s or row["status"].startswith(s + ","):
            return s
    raise AssertionError(f"{row['id']}: unknown status {row['status']!r}")


@cache
def _functions(path: str) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    """The module-level functions of a test file, by name."""
    tree = ast.parse((ROOT / path).read_text(), filename=path)
    return {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def _is_strict_xfail(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    for dec in fn.decorator_list:
        if (isinstance(dec, ast.Call) and ast.unparse(dec.func) == "pytest.mark.xfail"
                and any(k.arg == "strict" and isinstance(k.value, ast.Constant) and k.value.value is True
                        for k in dec.keywords)):
            return True
    return False


def test_every_requirement_has_exactly_one_row_in_its_section() -> None:
    want = Counter(_requirements())
    have = Counter((r["category"], r["id"], r["level"], r["requirement"]) for r in _map_rows())
    assert sum(want.values()) == 126
    assert have - want == Counter(), "rows that are not in the RFC table (or changed its wording)"
    assert want - have == Counter(), "RFC rows missing from docs/conformance.md"


def test_every_row_has_a_known_status_and_a_proof_or_a_reason() -> None:
    for row in _map_rows():
        status = _status(row)
        cited = _CITE.findall(row["proof"])
        if status == "proved":
            assert cited, f"{row['id']} ({row['requirement']}) is proved by no test"
        else:
            assert len(row["proof"]) > 20, f"{row['id']}: {status} needs a reason"


def test_every_cited_test_exists() -> None:
    cited = set(_CITE.findall(DOC.read_text()))
    assert len(cited) > 100
    missing = [f"{path}::{name}" for path, name in sorted(cited)
               if not (ROOT / path).is_file() or name not in _functions(path)]
    assert missing == []
    assert all(name.startswith("test_") for _, name in cited)


def test_the_xfail_table_lists_exactly_the_strict_xfails() -> None:
    """A strict xfail turns into a failure (XPASS) when its behaviour is fixed; the map's table
    of them must then change with it, and a violation pinned by a new one must be listed."""
    text = DOC.read_text()
    table = text[text.index("The strict `xfail` tests"):text.index("\n## ")]
    listed = {(path, name) for path, name in _CITE.findall(table)}
    strict = {(CONFORMANCE_TESTS, name) for name, fn in _functions(CONFORMANCE_TESTS).items()
              if _is_strict_xfail(fn)}
    assert listed == strict
    by_id = {r["id"]: _status(r) for r in _map_rows()}
    for line in table.splitlines():
        for rid in re.findall(r"\| ((?:MUST|SHLD|MAY|REC)-\d+) \|", line):
            assert by_id[rid] != "proved", f"{rid} has a strict xfail but is marked proved"


def test_the_summary_counts_are_the_rows_counts() -> None:
    rows = _map_rows()
    text = DOC.read_text()
    summary = text[text.index("\n## Summary"):]
    by_status = Counter(_status(r) for r in rows)
    for s in STATUSES:
        m = re.search(rf"^\| {s} \| (\d+) \|$", summary, re.M)
        assert m and int(m.group(1)) == by_status[s], (s, by_status[s])
    assert re.search(rf"^\| \*\*total\*\* \| \*\*{len(rows)}\*\* \|$", summary, re.M)
    by_level = Counter((LEVEL_GROUP[r["level"]], _status(r)) for r in rows)
    for group in ("MUST", "SHOULD", "MAY"):
        m = re.search(rf"^\| {group} \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|$", summary, re.M)
        assert m, group
        assert [int(g) for g in m.groups()] == [by_level[(group, s)] for s in STATUSES], group
