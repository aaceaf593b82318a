"""Old import paths of moerl's modules, kept so that files written before the layout moved still load.

Why: Stable-Baselines3 pickles a model's policy class, and a checkpoint pickles its env, by import path
(``moerl.agents.moe_policy.MoEDQNPolicy``). Until the layout by research line, modules lived in layer
folders (``agents``, ``envs``, ``experiments``) and at the package root. A finder on ``sys.meta_path`` serves
each old name as the module that now holds the code (the same module object, so classes are identical), and
nothing else: new code imports the new paths (``tests/test_pre_move_files.py`` loads such files).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType

#: Old package -> the package that now holds what it exported.
OLD_PACKAGES = {"moerl.agents": "moerl.rl.sb3", "moerl.envs": "moerl.rl.envs", "moerl.experiments": "moerl.runs"}

#: Old module path -> new module path.
OLD_MODULES = {
    "moerl.errors": "moerl.core.errors",
    "moerl.registry": "moerl.core.registry",
    "moerl.config": "moerl.core.config",
    "moerl.config_files": "moerl.core.config_files",
    "moerl.devices": "moerl.core.devices",
    "moerl.seeding": "moerl.core.seeding",
    "moerl.seed_streams": "moerl.core.seed_streams",
    "moerl.cpu_allocator": "moerl.core.cpu_allocator",
    "moerl.checkpoint_store": "moerl.core.checkpoint_store",
    "moerl._lazy": "moerl.core.lazy",
    "moerl.experiments.rundir": "moerl.runs.rundir",
    "moerl.experiments.provenance": "moerl.runs.provenance",
    "moerl.experiments.console": "moerl.runs.console",
    "moerl.experiments.families": "moerl.runs.kinds",
    "moerl.experiments.runs_table": "moerl.runs.listing",
    "moerl.experiments.tables": "moerl.runs.tables",
    "moerl.experiments.seed_intervals": "moerl.runs.seed_intervals",
    "moerl.experiments.report_supervised": "moerl.runs.supervised_report",
    "moerl.experiments.sweep": "moerl.runs.sweep.launch",
    "moerl.experiments.sweep_spec": "moerl.runs.sweep.spec",
    "moerl.experiments.sweep_jobs": "moerl.runs.sweep.jobs",
    "moerl.experiments.sweep_ray": "moerl.runs.sweep.ray_backend",
    "moerl.nn.routers": "moerl.nn.gating",
    "moerl.nn.qnetwork": "moerl.rl.nets.qnetwork",
    "moerl.nn.batched": "moerl.rl.nets.batched",
    "moerl.agents.obs_layout": "moerl.rl.nets.obs_layout",
    "moerl.envs.games": "moerl.rl.envs.games",
    "moerl.envs.tasks": "moerl.rl.envs.tasks",
    "moerl.envs.schedule": "moerl.rl.envs.schedule",
    "moerl.envs.suite": "moerl.rl.envs.suite",
    "moerl.envs.batched": "moerl.rl.envs.batched",
    "moerl.envs.attributes": "moerl.rl.envs.attributes",
    "moerl.envs.registration": "moerl.rl.envs.registration",
    "moerl.agents.batched_replay": "moerl.rl.algos.replay",
    "moerl.agents.batched_dqn": "moerl.rl.engine.batched_dqn",
    "moerl.agents.moe_dqn": "moerl.rl.sb3.moe_dqn",
    "moerl.agents.moe_policy": "moerl.rl.sb3.policy",
    "moerl.agents.callbacks": "moerl.rl.sb3.callbacks",
    "moerl.agents.dqn_checkpoint": "moerl.rl.sb3.checkpoint",
    "moerl.agents.evaluation": "moerl.rl.evaluation",
    "moerl.agents.tb_layout": "moerl.rl.tb_layout",
    "moerl.experiments.batched_runs": "moerl.rl.batched_runs",
    "moerl.experiments.continual": "moerl.rl.continual",
    "moerl.experiments.moe_dqn": "moerl.rl.experiment",
    "moerl.experiments.moe_dqn_config": "moerl.rl.config",
    "moerl.experiments.moe_dqn_console": "moerl.rl.console",
    "moerl.experiments.report": "moerl.rl.report.summary",
    "moerl.experiments.report_claims": "moerl.rl.report.claims",
    "moerl.experiments.report_data": "moerl.rl.report.data",
    "moerl.experiments.report_figures": "moerl.rl.report.figures",
    "moerl.experiments.report_stats": "moerl.rl.report.stats",
    "moerl.experiments.report_study": "moerl.rl.report.study",
    "moerl.nn.routing": "moerl.routing.nets",
    "moerl.nn.mtl_baselines": "moerl.routing.baselines",
    "moerl.envs.routing_mdp": "moerl.routing.mdp",
    "moerl.data.mtl": "moerl.routing.data",
    "moerl.agents.routers": "moerl.routing.policies",
    "moerl.agents.routing_config": "moerl.routing.config",
    "moerl.agents.routing_trainer": "moerl.routing.trainer",
    "moerl.agents.route_collisions": "moerl.routing.collisions",
    "moerl.experiments.routing": "moerl.routing.experiment",
    "moerl.experiments.routing_paper": "moerl.routing.paper",
    "moerl.experiments.report_supervised_figures": "moerl.routing.figures",
    "moerl.nn.masked_linear": "moerl.masked.nn.linear",
    "moerl.nn.masked_experts": "moerl.masked.nn.experts",
    "moerl.nn.gates": "moerl.masked.nn.gates",
    "moerl.nn.packnet": "moerl.masked.nn.packnet",
    "moerl.nn.backbones": "moerl.masked.nn.backbones",
    "moerl.nn.resnet": "moerl.masked.nn.resnet",
    "moerl.data.vision_suites": "moerl.masked.suites",
    "moerl.agents.masked_experts": "moerl.masked.learner",
    "moerl.agents.packnet": "moerl.masked.packnet",
    "moerl.agents.vision_metrics": "moerl.masked.metrics",
    "moerl.agents.vision_training": "moerl.masked.training",
    "moerl.agents.vision_config": "moerl.masked.config",
    "moerl.agents.vision_learners": "moerl.masked.learners",
    "moerl.experiments.masked_experts": "moerl.masked.experiment",
    "moerl.experiments.vision_grid": "moerl.masked.grid",
    "moerl.experiments.vision_plots": "moerl.masked.plots",
}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        """The target module ran when it was imported; the old name is only another key for it."""


class _OldPaths(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        new = OLD_MODULES.get(fullname) or OLD_PACKAGES.get(fullname)
        if new is None:
            return None
        spec = importlib.util.spec_from_loader(fullname, _AliasLoader(new))
        if spec is not None and fullname in OLD_PACKAGES:
            spec.submodule_search_locations = []
        return spec


def install() -> None:
    """Serve the old import paths (idempotent)."""
    if not any(isinstance(f, _OldPaths) for f in sys.meta_path):
        sys.meta_path.append(_OldPaths())
