"""`python -m gradjax ...` is the `gradjax` command."""

from gradjax.cli import main

raise SystemExit(main())
