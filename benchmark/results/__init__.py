"""The results layer: the record schema, aggregation and statistics, the leaderboard. Stands on
``benchmark.core`` only; ``reports`` and the harness read it."""
