"""twofold.sim: the deterministic discrete-event driver. Arrives with its own issue."""
