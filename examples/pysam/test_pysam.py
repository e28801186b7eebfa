"""Tests for the pysam example, with ekl's pytest plugin: ``pytest examples/pysam``.

The ``ekl_plugin`` fixture starts the plugin in this folder under ekl's host (no eKuiper
needed) and stops it, with every process and socket, when each test ends. The project's
own suite (``./run-tests``) does not collect this file; tests/test_authoring.py runs it.
"""

import pytest

from ekl.launcher.errors import FunctionError


def test_revert_reverses_a_string(ekl_plugin):
    assert ekl_plugin.call("revert", "hello") == "olleh"


def test_revert_refuses_a_number_with_one_line(ekl_plugin):
    with pytest.raises(FunctionError, match="revert needs a string, got int"):
        ekl_plugin.call("revert", 42)


def test_revert_validate_counts_arguments(ekl_plugin):
    assert ekl_plugin.validate("revert", "a") is None
    assert "exactly one argument, got 2" in ekl_plugin.validate("revert", "a", "b")


def test_pyjson_reads_datasource_and_yaml_section(ekl_plugin):
    records = ekl_plugin.read("pyjson", 3, datasource="dev1", conf_key="fast", meta=True)
    assert [r["message"]["name"] for r in records] == ["dev1"] * 3
    assert [r["message"]["value"] for r in records] == [2021, 2022, 2023]
    assert records[0]["meta"] == {"source": "pyjson"}


def test_pyjson_config_overrides_the_yaml(ekl_plugin):
    records = ekl_plugin.read("pyjson", 2, config={"interval": 0.01, "start": 7})
    assert [r["value"] for r in records] == [7, 8]


def test_print_sink_prints_and_acks(ekl_plugin):
    acks = ekl_plugin.feed("print", [{"a": 1}, [{"b": 2}, {"b": 3}]], config={"prefix": "got:"})
    assert acks == [None, None]
    assert ekl_plugin.wait_output(r'^got: \[\{"b": ?2\}').startswith("got:")


def test_ping(ekl_plugin):
    assert ekl_plugin.ping() < 5
