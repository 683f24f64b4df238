"""``mtactl suppressions``: add, list, remove, and a CSV round trip through import and export."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from tests.controlplane.test_cli import mtactl


def test_an_operator_adds_lists_exports_imports_and_removes_from_the_command_line(tmp_path: Path) -> None:
    added = mtactl(tmp_path, "suppressions", "add", "Bob@Example.com", "--reason", "unsubscribe")
    assert added.returncode == 0, added.stderr
    assert "Bob@example.com  unsubscribe  tenant=-" in added.stdout
    listed = json.loads(mtactl(tmp_path, "suppressions", "list", "--json").stdout)
    assert [(e["email"], e["reason"]) for e in listed] == [("Bob@example.com", "unsubscribe")]
    assert mtactl(tmp_path, "suppressions", "add", "Bob@example.com").returncode == 1  # already in force

    (tmp_path / "in.csv").write_text("email,reason,tenant_id\nann@x.example,complaint,acme\nnope,manual,\n")
    imported = mtactl(tmp_path, "suppressions", "import", "in.csv")
    assert imported.returncode == 2  # a row was rejected; the good one kept
    assert "1 added" in imported.stdout and "row 3: email" in imported.stderr
    again = mtactl(tmp_path, "suppressions", "import", "in.csv")
    assert "0 added, 1 already present" in again.stdout

    exported = mtactl(tmp_path, "suppressions", "export", "out.csv")
    assert exported.returncode == 0 and "2 entries written" in exported.stderr
    rows = list(csv.DictReader((tmp_path / "out.csv").open()))
    assert {(r["email"], r["tenant_id"]) for r in rows} == {("Bob@example.com", ""), ("ann@x.example", "acme")}

    removed = mtactl(tmp_path, "suppressions", "remove", "Bob@example.com")
    assert removed.returncode == 0 and "removed Bob@example.com" in removed.stdout
    assert mtactl(tmp_path, "suppressions", "remove", "Bob@example.com").returncode == 1
    assert mtactl(tmp_path, "suppressions", "add", "not-an-address").returncode == 2
