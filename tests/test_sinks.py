"""The checks at the places values leave the bakery (pipeline/common/sinks.py), and the progress lines a CI log
reads: each property of a sink is tried with what would break it."""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest

from pipeline.build.vm import Accelerator, Drive, VmSpec, qemu_command
from pipeline.common.errors import BakeryError
from pipeline.common.progress import plain_line
from pipeline.common.secrets import redact, register_url
from pipeline.common.sinks import machine_type, qemu_value, script_word, shell_line


@pytest.mark.parametrize("value", ["pc", "q35", "pc-q35-8.2", "pc-i440fx-9.2", "pc-q35-rhel9.4.0"])
def test_machine_types_nova_and_qemu_accept(value):
    assert machine_type("x", value) == value


@pytest.mark.parametrize("value", ["q35,kernel=/etc/passwd", "pc,firmware=/x", "q35 ", "", "pc-q35-8.2,smm=off", "-M", "q35\n", "virt"])
def test_anything_else_is_refused_as_a_machine_type(value):
    with pytest.raises(BakeryError, match="not a machine type"):
        machine_type("canary", value)


def test_qemu_values_keep_their_commas_inside_the_option(tmp_path):
    """QEMU's own parser: a doubled comma is part of the value, so a file name cannot add an option."""
    hostile = tmp_path / "a,file=evil,format=qcow2.raw"
    spec = VmSpec(disk=Drive(hostile, "raw"), disk_bus="virtio-blk", cdroms=(tmp_path / "x,readonly=off.iso",), role="canary",
                  machine="q35")
    argv = qemu_command(spec, tmp_path, Accelerator("tcg", "test"), qmp_socket=tmp_path / "q,m.sock", tpm_socket=None)
    drive = argv[argv.index("-drive") + 1]
    assert drive.startswith(f"file={str(hostile).replace(',', ',,')},if=none")
    assert qemu_value("a,b") == "a,,b"
    with pytest.raises(BakeryError):
        qemu_value("a\nb")


def test_a_machine_type_that_reached_the_vm_spec_is_refused_there(tmp_path):
    spec = VmSpec(disk=Drive(tmp_path / "d.raw", "raw"), disk_bus="virtio-blk", cdroms=(), machine="q35,kernel=/etc/passwd")
    with pytest.raises(BakeryError, match="not a machine type"):
        qemu_command(spec, tmp_path, Accelerator("tcg", "test"), qmp_socket=tmp_path / "qmp.sock", tpm_socket=None)


@pytest.mark.parametrize("word", ["rel$(touch PWNED).yaml", "a b", "x;touch PWNED", "it's", 'q"q', "${IFS}x", "a|b&c>d"])
def test_shell_lines_keep_every_word_one_word(word, tmp_path):
    line = shell_line("printf", "%s\\n", word, prefix="")
    out = subprocess.run(["bash", "-c", line], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert out == word + "\n" and not list(tmp_path.iterdir())
    assert shlex.split(line)[2] == word


@pytest.mark.parametrize("word, reason", [("a\nb", "U+000A"), ("-x", "starts with -"), ("a`id`", "backtick"), ("", "empty"),
                                          ("a\u2028b", "U+2028")])
def test_script_words_refuse_what_a_runner_treats_specially(word, reason):
    with pytest.raises(BakeryError, match=re.escape(reason)):
        script_word("--cloud", word)


@pytest.mark.parametrize("url, secret", [
    ("https://h/x.raw?token=SECRET1&a=b", "SECRET1"), ("https://h/v1/AUTH/c/o?temp_url_sig=SECRET2&temp_url_expires=1", "SECRET2"),
    ("https://h/o?X-Amz-Signature=SECRET3&X-Amz-Credential=SECRET4", "SECRET3"), ("https://h/o?sig=SECRET5", "SECRET5"),
    ("https://h/o?a=1&access_token=SECRET6#frag", "SECRET6"), ("https://h/o?signature=SECRET7", "SECRET7"),
    ("https://u:SECRET8@h/o", "SECRET8")])
def test_query_string_credentials_are_masked_in_any_text(url, secret):
    assert secret not in redact(f"fetch {url}: HTTP 404")
    register_url(url)
    assert secret not in redact(f"the server said {secret} in its answer")


def test_redaction_keeps_what_is_not_a_credential():
    assert redact("https://h/o?keyword=abc&page=2") == "https://h/o?keyword=abc&page=2"


def test_progress_never_shows_a_percentage_of_an_unknown_or_exceeded_size():
    assert plain_line("fetch u", 515 * 2**20, None, 3.0) == "fetch u: 515 MiB 172 MiB/s"
    assert plain_line("fetch u", 515 * 2**20, 0, 3.0) == "fetch u: 515 MiB 172 MiB/s"
    assert "%" not in plain_line("fetch u", 515 * 2**20, 2**20, 3.0)  # a server that sends more than it declared
    assert plain_line("fetch u", 2**20, 4 * 2**20, 1.0) == "fetch u: 1/4 MiB (25%) 1 MiB/s"
