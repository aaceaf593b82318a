"""The README's tables of choices are the registries' own (one definition, read everywhere)."""

from pathlib import Path

import pytest

from moerl.nn.choices import ARCHS, BALANCE_LOSSES, ROUTERS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


@pytest.mark.parametrize("registry,header", [
    (ARCHS, ("`--arch`", "placement")),
    (ROUTERS, ("`--router`", "routing")),
    (BALANCE_LOSSES, ("`network.balance_loss`", "loss")),
])
def test_readme_table_is_generated_from_the_registry(registry, header):
    table = registry.markdown(header)
    assert table in README, f"README's {registry.kind} table is stale; paste:\n{table}"


def test_cli_help_lists_the_registry_choices(capsys):
    """The RL line's help (``moerl train --env ENV --help``) lists the registries' choices; the shared help
    says where the line's flags are."""
    from moerl.cli import main

    assert main(["train", "--env", "cartpole-crl", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert ARCHS.help() in out and ROUTERS.help() in out
    assert main(["train", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "moerl train --env ENV --help" in out and ARCHS.help() not in out
