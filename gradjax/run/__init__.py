"""Running a sweep: the checks made before anything is written (`preflight`), chunks under a
memory budget, compiling, the host loop over chunks, resume and provenance (`engine`), and the
ways of launching it beyond one process (`ray_executor`, `multihost`).
"""
