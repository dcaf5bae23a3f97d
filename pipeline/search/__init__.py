"""The hyperparameter search: the space from sweeps/*.yaml (`space`), the Optuna study and the search itself
(`study`), its database riding out dropped connections (`storage`), the best trial's kept weights
(`checkpoints`), interrupted trials continued from their last epoch (`resume`), and Optuna's private API in one
place (`internals`)."""
