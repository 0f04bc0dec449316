"""The probe: one init -> gradient statistics, vmapped over seeds and looped over points in one
compiled chunk program per bucket. Exact power-of-two rescaling (`pow2`), reductions of one
tensor (`stats`), the MLP's probe (`mlp_probe`), the probe of any other family (`tree_probe`),
optimizer steps inside the probe (`training`) and the process's cache of compiled programs
(`programs`).
"""
