"""The foundation: data, models, training, evaluation and the vocabulary every layer above uses.
It imports nothing from the packages above it (attacks, defenses, results, reports, the harness)."""
