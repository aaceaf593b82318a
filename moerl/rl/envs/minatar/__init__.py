"""MinAtar's five games (Asterix, Breakout, Freeway, Seaquest, SpaceInvaders) as batched torch dynamics.

Written from the games' rules (Young and Tian 2019, "MinAtar: An Atari-Inspired Testbed for Thorough and
Reproducible Reinforcement Learning Experiments", and the games' documented behaviour); the ``minatar``
package (GPL-3.0) is an optional dependency used as the test oracle only, never copied or translated.
See :mod:`moerl.rl.envs.minatar.base` for the interface every game implements.
"""
