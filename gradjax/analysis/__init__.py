"""What a results folder shows: the figures and the self-contained HTML report (`report`).
"""
