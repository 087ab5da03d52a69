"""The docs cannot drift from the code: the command table and the error codes."""

from __future__ import annotations

import re
import subprocess
import sys

from bridge import errors
from conftest import ROOT, worker_env

PROTOCOL = ROOT / "docs" / "protocol.md"


def test_protocol_md_has_the_current_command_table() -> None:
    proc = subprocess.run([sys.executable, "-m", "dspex_cli", "commands", "--markdown"], env=worker_env(),
                          cwd=ROOT, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    generated = proc.stdout.decode()
    assert generated.startswith("| command | scheduling | arguments | what it does |")
    doc = PROTOCOL.read_text()
    match = re.search(r"<!-- commands:start -->\n(.*?)<!-- commands:end -->", doc, re.S)
    assert match, "docs/protocol.md lost its command table markers"
    assert match.group(1) == generated, (
        "docs/protocol.md is out of date: regenerate its table with `python -m dspex_cli commands --markdown`")


def test_protocol_md_lists_every_error_type() -> None:
    doc = PROTOCOL.read_text()
    table = doc.split("## Error types", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)` \|", table, re.M))
    codes = {cls.error_type for cls in vars(errors).values()
             if isinstance(cls, type) and issubclass(cls, errors.BridgeError)}
    assert codes == documented


def test_generated_table_rows_have_four_cells() -> None:
    proc = subprocess.run([sys.executable, "-m", "dspex_cli", "commands", "--markdown"], env=worker_env(),
                          cwd=ROOT, capture_output=True, timeout=60, text=True)
    for line in proc.stdout.splitlines():
        cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
        assert len(cells) == 4, line
