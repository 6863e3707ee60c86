"""``python -m convlens.cli ...``: the same program as the ``convlens`` console script (Fabric's
subprocess launcher runs a data-parallel ``convlens train`` again this way)."""

from . import main

if __name__ == "__main__":
    main()
