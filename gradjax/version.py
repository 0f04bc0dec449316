"""The version of the installed gradjax. Its one home is pyproject.toml; this reads it from the
installed package's metadata, so provenance and `gradjax.__version__` never disagree with it."""

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("gradjax")
except PackageNotFoundError:  # imported from a checkout that was never installed
    VERSION = "0+unknown"
