"""MinAtar's five games (Asterix, Breakout, Freeway, Seaquest, SpaceInvaders) as batched torch dynamics.

Written from the games' rules (Young and Tian 2019, "MinAtar: An Atari-Inspired Testbed for Thorough and
Reproducible Reinforcement Learning Experiments", and the games' documented behaviour); the ``minatar``
package (GPL-3.0) is an optional dependency, the games of the Gymnasium reference suites
(:mod:`moerl.rl.envs.minatar_suite`) and the test oracle of these, never copied or translated.
See :mod:`moerl.rl.envs.minatar.base` for the interface every game implements, and
:mod:`moerl.rl.envs.minatar.games` for what the suites declare about each game (plain data).
"""
