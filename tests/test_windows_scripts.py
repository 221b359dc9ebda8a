"""No Windows runs here, so the PowerShell and cmd the bakery ships are read by real parsers (tree-sitter's
PowerShell and Batch grammars): a syntax error is found here, not on the first real Windows. Each parser is
also shown a broken script, so a parser that accepts anything would fail these tests."""

from __future__ import annotations

import pytest
from tree_sitter import Language, Parser

from pipeline.build.provision import LAUNCHER_TEXT, RUNNER
from pipeline.windows import firstboot_script

ps_grammar = pytest.importorskip("tree_sitter_powershell")
batch_grammar = pytest.importorskip("tree_sitter_batch")


def errors(parser: Parser, text: bytes) -> list[str]:
    """Where the parser found a syntax error or had to invent a missing token."""
    found, stack = [], [parser.parse(text).root_node]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            found.append(f"line {node.start_point[0] + 1}: {text.splitlines()[node.start_point[0]][:120]!r}")
        stack.extend(node.children)
    return found


@pytest.fixture(scope="module")
def powershell() -> Parser:
    return Parser(Language(ps_grammar.language()))


@pytest.fixture(scope="module")
def batch() -> Parser:
    return Parser(Language(batch_grammar.language()))


def test_the_provisioning_runner_parses_as_powershell(powershell):
    text = RUNNER.read_bytes()
    assert errors(powershell, text) == []
    assert errors(powershell, text.replace(b"}", b"", 1)) != []  # the parser can say no


@pytest.mark.parametrize("build", [7601, 9600, 19045], ids=["w7-pnputil-i-a", "w81-pnputil-i-a", "w10-add-driver"])
def test_the_first_boot_script_parses_as_cmd(batch, build):
    text = firstboot_script.install_script(build=build, virtio_win_version="0.1.240").encode("ascii")
    assert errors(batch, text) == []
    assert errors(batch, text.replace(b"\r\n)\r\n", b"\r\n", 1)) != []  # an unclosed block


def test_the_first_boot_script_marks_success_only_after_every_install_succeeded():
    lines = firstboot_script.install_script(build=19045, virtio_win_version="0.1.240").splitlines()
    mark = lines.index('echo done > "%MARK%"')
    failed_exit = lines.index("if !FAILED! NEQ 0 (")
    installs = [i for i, line in enumerate(lines) if line.lstrip().startswith(("pnputil", "msiexec"))]
    checks = [i for i, line in enumerate(lines) if line.lstrip().startswith("call :accepted !ERRORLEVEL!")]
    assert len(checks) == len(installs) and all(check == install + 1 for install, check in zip(installs, checks))
    assert max(installs) < failed_exit < mark and lines[failed_exit + 2].strip() == "exit /b 1"
    assert sum('"%MARK%"' in line and "echo" in line for line in lines) == 1  # no other path writes the marker
    assert f"if !ATTEMPT! GTR {firstboot_script.MAX_ATTEMPTS} (" in lines


def test_the_provisioning_launcher_parses_as_cmd(batch):
    assert errors(batch, LAUNCHER_TEXT.encode("ascii")) == []


def test_the_install_firstlogon_script_parses_as_cmd(batch, tmp_path):
    from tests.test_unattend import rendered

    answer, _ = rendered(tmp_path)
    assert errors(batch, answer.firstlogon.encode()) == []
