"""`gradjax bench`: gradjax's run path measured against the peers a user would otherwise write
(`peers`: the seed's numpy loop, numpy vectorized by hand, torch.func), in one run
(`measure`).
"""
