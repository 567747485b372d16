"""Fault injection and soak runs of the whole hub as processes (issue 15): the rig, the traffic, the faults, the
samples and the invariants checked against the simulator's ground truth (D§4, D§11)."""
