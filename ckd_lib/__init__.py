"""ckd_lib: models, losses, training engine and results for the CKD reproduction study."""

import sys

__version__ = "0.1.0"

if sys.argv[:1] == ["-m"]:  # imported to run ``python -m ckd_lib.<command>``
    from ckd_lib.errors import quiet_interrupts

    quiet_interrupts()
