"""Running a sweep, split by job: the checks made before anything is written (`preflight`,
`model_check`), which launch options go together (`launch_options`), planning chunks under a
memory budget and the packs of cells they run (`plan`), compiling them once (`executables`),
one host loop over a pack's chunks with its checkpoints and parts (`pack_work`), moments
merged across chunks on the host (`moments`), progress and the run report (`progress`),
provenance (`provenance`), Ctrl-C (`interrupt`), the run itself (`engine`), its cost estimated
without compiling (`estimate`), a sweep run from a notebook (`library`), and the launchers
beyond one process (`ray_executor`, `multihost`), which run the same work list through
`engine`'s `open_ledger`, `share_of` and `complete_folder`.
"""
