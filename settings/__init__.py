"""The vocabulary of the house: what a run is, named once, with no Keras, TensorFlow, JAX or NumPy.

- `settings.config`: `RunConfig`, every setting of a run with its default, choices and check, and `ConfigError`.
- `settings.types`: the training types (what is trained, which mask, the Min* loss term).
- `settings.identity`: a run's identity: which settings make two runs the same run, and its experiment directory.
- `settings.names`: the environment variables shared across processes (the claim file, the thread limits).
- `settings.commands`: the command-line tools' exit statuses and their one-line argparse parser.

Everything above imports from here (training, runlog, experiments, export and the three scripts); nothing here
imports them back, but for the registries (`networks`, `masks`, ...) read lazily for a setting's choices.
"""
