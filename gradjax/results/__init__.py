"""The results folder, no JAX: its layout and schemas, atomic checksummed Parquet writes and
`load` (`storage`), pieces of work and their locks, growth and finished cells (`ledger`),
object-store URIs (`remote`) and the across-seed summaries written from host-side moments
(`summary`), and the swept options that changed no number (`inert`). Reading results needs
only this layer and the declarations.
"""
