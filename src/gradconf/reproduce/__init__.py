"""Reproduction experiments for the claims of Sankararaman et al. (ICML 2020).

Sankararaman, De, Xu, Huang and Goldstein, "The Impact of Neural Network
Overparameterization on Gradient Confusion and Stochastic Gradient Descent". Each
experiment follows the ``Experiment`` protocol of ``gradconf.reproduce.base``, is listed in
``gradconf.reproduce.registry.EXPERIMENTS``, and returns verdicts for the claims table of
the report written by ``gradconf.reproduce.report``. From the command line::

    gradconf reproduce --list
    gradconf reproduce all --scale quick --out results/reproduce
"""

from gradconf.reproduce.base import SCALES, Experiment, ExperimentOutput

__all__ = ["SCALES", "Experiment", "ExperimentOutput"]
