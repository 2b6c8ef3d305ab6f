"""Trajectories out of the engine into other formats: numpy arrays, ``.npz``, d3rlpy datasets."""
