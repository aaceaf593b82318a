"""Gymnasium environments: RL task suites (MTRL, CRL) and the routing MDP, registered under ``moerl/``."""

from moerl.envs.registration import register_all

register_all()
