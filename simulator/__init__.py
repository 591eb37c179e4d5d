"""Attack simulator and evaluator: a labelled stream of benign traffic with the literature's attacks
planted in it, and the scores of a replay's verdicts and flags against that truth."""

from simulator.base import Base
from simulator.build import FAMILIES, Shape, Simulation, build, plan_attacks
from simulator.evaluate import evaluate_replay
from simulator.movielens import MovieLensNotFound, default_movielens_dir, load_movielens
from simulator.synthetic import synthetic_base
from simulator.world import AttackSpec

__all__ = ["AttackSpec", "Base", "FAMILIES", "MovieLensNotFound", "Shape", "Simulation", "build",
           "default_movielens_dir", "evaluate_replay", "load_movielens", "plan_attacks", "synthetic_base"]
