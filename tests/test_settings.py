"""Numbers, ports and choices as they enter from options and the environment (pipeline.common.settings)."""

from __future__ import annotations

import pytest

from pipeline.common.errors import BakeryError
from pipeline.common.settings import choice, decimal, port_setting, tcp_port, whole_number


@pytest.mark.parametrize("text", ["abc", "", " ", "0x50", "1e3", "12.0", "٣", "1_000", "9" * 40, "nan", "-inf", "+"])
def test_a_whole_number_is_plain_decimal_digits(text):
    with pytest.raises(BakeryError, match=r"^--n: expected a whole number from 1 to 100, got "):
        whole_number(text, "--n", low=1, high=100)


def test_a_whole_number_in_range_is_taken_with_its_sign_and_spaces():
    assert whole_number(" 42 ", "--n", low=1, high=100) == 42
    assert whole_number("-3", "--n", low=-5, high=5) == -3
    assert whole_number(7, "--n", low=1, high=100) == 7
    for outside in ("0", "101", "-1"):
        with pytest.raises(BakeryError):
            whole_number(outside, "--n", low=1, high=100)


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-Infinity", "1e400", "abc", "", "-0.5", "30.000001"])
def test_a_decimal_is_finite_and_in_range(text):
    with pytest.raises(BakeryError, match=r"^BAKERY_X: expected a number from 0 to 30 seconds, got "):
        decimal(text, "BAKERY_X", low=0, high=30, unit="seconds")


def test_a_decimal_in_range_is_taken():
    assert decimal("2.5", "--x", low=0, high=30) == 2.5
    assert decimal("0", "--x", low=0, high=30) == 0


def test_a_port_blames_the_option_when_given_and_the_variable_otherwise(monkeypatch):
    monkeypatch.setenv("BAKERY_TEST_PORT", "70000")
    assert port_setting("8080", "--port", "BAKERY_TEST_PORT", 1234) == 8080
    with pytest.raises(BakeryError, match="^BAKERY_TEST_PORT: "):
        port_setting(None, "--port", "BAKERY_TEST_PORT", 1234)
    with pytest.raises(BakeryError, match="^--port: "):
        port_setting("0", "--port", "BAKERY_TEST_PORT", 1234)
    monkeypatch.delenv("BAKERY_TEST_PORT")
    assert port_setting(None, "--port", "BAKERY_TEST_PORT", 1234) == 1234
    assert tcp_port("65535", "p") == 65535


def test_a_refused_value_is_shown_bounded():
    with pytest.raises(BakeryError) as refused:
        tcp_port("x" * 10_000, "--port")
    assert len(str(refused.value)) < 120


def test_a_choice_is_exact():
    assert choice("tcg", "BAKERY_ACCEL", ("kvm", "tcg")) == "tcg"
    for wrong in ("TCG", " tcg", None):
        with pytest.raises(BakeryError):
            choice(wrong, "BAKERY_ACCEL", ("kvm", "tcg"))
