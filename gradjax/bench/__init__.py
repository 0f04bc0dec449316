"""`gradjax bench`: gradjax's run path measured against the peers a user would otherwise write,
in one run. `command`: the command line; `measure`: one measurement (`Job`), in this process or
a fresh one; `workloads`: what is measured, as data; `record`: the records, the table and the
output files; `numpy_peer`: the seed's numpy loop and numpy vectorized by hand; `torch_peer`:
torch.func; `precision`: how far TF32 matmuls move the statistics (`make bench-gpu`).
"""
