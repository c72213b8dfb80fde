"""The tools layer: executing chapters, the status and catalog pages, sweeps, stability and the bench.

Tools read chapters as notebooks; they never import a chapter's module.
"""
