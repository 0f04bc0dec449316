"""What a results folder shows, for every model: the report (`report`: the command, the page and
the mean-field table) and its figures (`heatmaps`, `profiles`, `distributions`,
`training_figures`, sharing `drawing`), the folder in words (`findings`), a tune's
prescription in words (`prescription`, which both lead with) and the summary as a terminal
table (`summary_table`). Reads results only; imports no JAX but the mean-field lines.
"""
