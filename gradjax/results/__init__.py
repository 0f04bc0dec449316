"""The results folder, no JAX. `layout` owns every name in the folder and `ResultsError`;
`schema` derives the two tables' Arrow schemas from the declarations and builds per-seed rows;
`files` writes atomically with checksummed Parquet; `results_folder` is one folder as a run holds
it (ownership, locks, clearing); `reading` is `load`; `ledger` tracks pieces of work, their
locks, growth and finished cells; `remote` stages object-store URIs; `summary` writes per-cell
summaries from host-side moments; `inert` finds swept options that changed no number;
`columns` and `layers` say which columns are options and which row is a layer's weight.
Reading results needs only this layer and the declarations.
"""
