"""What a results folder shows, for every model: the figures and the self-contained HTML report
(`report`), the folder in words (`findings`) and the summary as a terminal table
(`summary_table`). Reads results only; imports no JAX but `report`'s mean-field lines.
"""
