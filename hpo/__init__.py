"""Hyperparameter search over the few-shot learners: Optuna studies tracked in MLflow.

Data flows one way: study YAML → validated config (:mod:`hpo.config`) → objective
(:mod:`hpo.objective`) → learner (:mod:`learners`) → metrics → tracker (:mod:`hpo.tracking`).
Entry point: ``python -m hpo.run STUDY.yaml`` (:mod:`hpo.run`).
"""
