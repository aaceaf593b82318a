"""Commands without surprises: the defaults ``--help`` and the README state are the code's defaults.

What this covers, honestly:

* ``--help``: every option of every subcommand whose help mentions a default is listed below, either with the
  code value it must state (``default: VALUE``, compared with the config dataclass or the function the CLI
  calls, and with argparse's own default where it has one) or as a described default (e.g. "derived from the
  options"), whose wording is checked but not its meaning. A new option that states a default fails the test
  until it is listed here; an option with an argparse default must state it.
* ``--device``: the per-family defaults in its help are each family's config default, for every family.
* README: the default statements listed in :data:`README_DEFAULTS`, each found exactly once by its pattern and
  compared with the code. Defaults the README states in other words are not parsed (not covered).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from moerl.cli import build_parser

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _code() -> dict[str, object]:
    from moerl.masked.config import MaskedExpertsConfig
    from moerl.rl.config import DQNRunConfig
    from moerl.routing.experiment import RoutingConfig
    from moerl.runs.kinds import TrainRequest

    dqn = DQNRunConfig()
    return {"logdir": TrainRequest().logdir, "engine": dqn.engine, "dqn_device": dqn.device,
            "routing_device": RoutingConfig().device, "masked_device": MaskedExpertsConfig().device,
            "checkpoint_every": dqn.checkpoint.every, "hidden": dqn.network.hidden, "experts": dqn.network.experts,
            **{f"dqn.{k}": v for k, v in vars(dqn.dqn).items()}}


def _sweep_default(name: str) -> object:
    import inspect

    from moerl.runs.sweep.launch import sweep

    return inspect.signature(sweep).parameters[name].default


#: (command, option) -> the value its help states as "default: VALUE".
STATED = {
    ("train", "--logdir"): lambda: _code()["logdir"],
    ("sweep", "--backend"): lambda: _sweep_default("backend"),
    ("sweep", "--gpus-per-job"): lambda: _sweep_default("gpus_per_job"),
    ("sweep", "--max-members"): lambda: _sweep_default("max_members"),
    ("runs", "dirs"): lambda: "runs",
}
#: (command, option) -> the wording of a default that is not one value.
DESCRIBED = {
    ("train", "--run-name"): "default: <env>_<arch>",
    ("eval", "--device"): "default: the run's config",
    ("sweep", "--workers"): "default: the number of cores",
    ("sweep", "--device"): "default: each config's",
    ("sweep", "--logdir"): "default: the sweep file's logdir",
    ("sweep", "--address"): "default: RAY_ADDRESS",
    ("report", "--curves"): "default: all",
}


def _options():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command, p in sub.choices.items():
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            yield command, (action.option_strings[0] if action.option_strings else action.dest), action


def test_every_stated_default_is_checked():
    mentioned = {(c, o) for c, o, a in _options() if "default" in (a.help or "")}
    assert mentioned == set(STATED) | set(DESCRIBED)
    for key, words in DESCRIBED.items():
        help_text = next(a.help for c, o, a in _options() if (c, o) == key)
        assert words in " ".join(help_text.split()), key


@pytest.mark.parametrize("key", sorted(STATED))
def test_help_states_the_codes_default(key):
    action = next(a for c, o, a in _options() if (c, o) == key)
    stated = re.search(r"default: ([^\s;),]+)", action.help).group(1)
    code = STATED[key]()
    assert stated == str(code), f"{key}: help says {stated}, the code has {code}"
    if action.default is not None:
        default = action.default[0] if isinstance(action.default, list) else action.default
        assert str(default) == stated, key


def test_argparse_defaults_are_stated():
    for command, option, action in _options():
        flag = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
        if action.default in (None, []) or flag:
            continue
        assert (command, option) in STATED, f"{command} {option} has default {action.default!r} but its help does " \
                                            "not state it (or this test does not check it)"


def test_each_lines_option_help_states_its_config_default():
    """A line's options are generated from its config dataclass: every one that sets a config key states that
    key's default, read here from the dataclass again (engine and device of each line included)."""
    from moerl.runs.kinds import families, options_help

    code = _code()
    expected = {("moe-dqn", "--engine"): code["engine"], ("moe-dqn", "--device"): code["dqn_device"],
                ("routing", "--device"): code["routing_device"], ("masked-experts", "--device"): code["masked_device"]}
    seen = set()
    for family in families():
        text = " ".join(options_help(family).split())
        for option in family.options:
            if option.key is None:
                continue
            stated = re.search(re.escape(option.cli) + r" VALUE .*?default: ([^\s;)]+)\)", text).group(1)
            if (family.name, option.cli) in expected:
                assert stated == str(expected[(family.name, option.cli)]), (family.name, option.cli)
                seen.add((family.name, option.cli))
    assert seen == set(expected)


def _number(text: str) -> float:
    return float(text.replace(",", ""))


#: A README statement of a default (a pattern whose groups are the values) -> the code's values.
README_DEFAULTS = {
    r"\[--logdir (\w+)\]": lambda c: [c["logdir"]],
    r"The engine is `(\w+)` by default": lambda c: [c["engine"]],
    r"the default `(\w+)` picks it for\s+the batched engine and the routing family": lambda c: [c["dqn_device"]],
    r"masked-expert runs default to `(\w+)`": lambda c: [c["masked_device"]],
    r"`--device` / `--set device=` \(default `(\w+)`\) places model, routers": lambda c: [c["routing_device"]],
    r"`moerl runs \[DIR\.\.\.\]` \(default `(\w+)`\)": lambda c: ["runs"],
    r"`checkpoint\.every` env steps \(default ([\d,]+)": lambda c: [c["checkpoint_every"]],
    r"\(Adam lr (\S+), eps (\S+), batch (\d+), learning starts\s+(\d+), update every (\d+) steps, target every "
    r"(\d+), constant epsilon (\S+), (\w+) loss": lambda c: [
        c["dqn.learning_rate"], c["dqn.adam_eps"], c["dqn.batch_size"], c["dqn.learning_starts"], c["dqn.train_freq"],
        c["dqn.target_update_interval"], c["dqn.exploration_final_eps"], c["dqn.loss"]],
    r"hidden width \*\*(\d+)\*\*": lambda c: [c["hidden"]],
    r"inputs rescaled to \[-1, 1\],\s+(\d+) experts\)": lambda c: [c["experts"]],
}


@pytest.mark.parametrize("pattern", list(README_DEFAULTS))
def test_readme_defaults_are_the_codes(pattern):
    matches = list(re.finditer(pattern, README))
    assert len(matches) == 1, f"the README states this default {len(matches)} times (pattern {pattern!r})"
    code = README_DEFAULTS[pattern](_code())
    for stated, value in zip(matches[0].groups(), code, strict=True):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            assert _number(stated) == pytest.approx(value), (pattern, stated, value)
        else:
            assert stated.lower() == str(value).lower(), (pattern, stated, value)


def test_readme_constant_epsilon_is_constant():
    """The README says the exploration epsilon is constant: its start and end are one value in the code."""
    code = _code()
    assert code["dqn.exploration_initial_eps"] == code["dqn.exploration_final_eps"]
