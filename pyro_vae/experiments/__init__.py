"""Experiments over many runs: compare grids and job arrays, label draws, and the selection of
M2's class weight."""
