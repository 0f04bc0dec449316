"""The probe: one init -> gradient statistics, vmapped over seeds and looped over points in one
compiled chunk program per bucket. Exact power-of-two rescaling (`pow2`); reductions of one
tensor (`stats`); the MLP's forward and backward pass (`backprop`) and its boolean replay that
tells dead zeros from underflow (`liveness`); the MLP's probe (`mlp_probe`) and the probe of any
other family (`tree_probe`), which share the points, the point loop and the chunk moments
(`chunking`); optimizer steps inside the probe (`training`); the process's cache of compiled
programs (`programs`), the program store that keeps a gradjax family's compiled programs on
disk under a name known before tracing (`program_store`), and JAX's cache events and a compile
that bypasses that cache (`compile_cache`); and `grad_stats` for any model (`api`).
"""
