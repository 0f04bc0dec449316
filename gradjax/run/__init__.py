"""Running a sweep: the checks made before anything is written (`preflight`), chunks under a
memory budget, compiling, the host loop over chunks, resume and provenance (`engine`), a run's
cost estimated without compiling (`estimate`), a sweep run from a notebook (`library`), and
the ways of launching it beyond one process (`ray_executor`, `multihost`).
"""
