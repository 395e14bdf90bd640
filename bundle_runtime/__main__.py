"""`python -m bundle_runtime`: the same as the `bundle-runtime` console script."""

from __future__ import annotations

from .server import main

if __name__ == "__main__":
    main()
