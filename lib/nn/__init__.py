"""The nn layer: the model families chapters share, the training loops and the metrics.

``repro.nn.train`` trains one model; ``repro.nn.ensemble`` trains many small models at once (one per
seed, stacked weights) and has the helpers to attack or evaluate them together.
"""
