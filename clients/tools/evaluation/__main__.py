import sys

from labelprob.tools.evaluation.command import main

sys.exit(main())
