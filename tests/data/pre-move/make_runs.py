"""Runs written by moerl before the layout moved (commit 20df4b1): finished and interrupted, both engines."""
from moerl.agents import dqn_checkpoint
from moerl.experiments import batched_runs

from moerl.cli import main

ARGS = ["--env", "cartpole-crl", "--arch", "big", "--router", "softmoe", "--timesteps", "1200",
        "--set", "network.hidden=8", "--set", "checkpoint.every=400", "--set", "eval.freq=400",
        "--set", "eval.episodes=2", "--set", "dqn.buffer_size=1000", "--logdir", ".", "--no-progress", "-q"]
assert main(["train", *ARGS, "--run-name", "sb3"]) == 0
assert main(["train", *ARGS, "--seeds", "0,1", "--engine", "batched", "--run-name", "batched"]) == 0

real = dqn_checkpoint.save_checkpoint
def dies_at_800(run_path, model, extra):
    if model.num_timesteps == 800:
        raise RuntimeError("simulated crash")
    return real(run_path, model, extra)
dqn_checkpoint.save_checkpoint = dies_at_800
try:
    main(["train", *ARGS, "--run-name", "sb3-cut"])
except RuntimeError as e:
    print("cut:", e)
dqn_checkpoint.save_checkpoint = real


real_b = batched_runs._Batch.checkpoint
def batch_dies_at_800(self, started):
    if self.agent.num_timesteps == 800:
        raise RuntimeError("simulated crash")
    return real_b(self, started)
batched_runs._Batch.checkpoint = batch_dies_at_800
try:
    main(["train", *ARGS, "--seeds", "0,1", "--engine", "batched", "--run-name", "batched-cut"])
except RuntimeError as e:
    print("cut:", e)
