"""``python -m ckd_lib.report --profile demo``: build results/report.html from the records."""

import sys

from ckd_lib.report.build import main

sys.exit(main())
