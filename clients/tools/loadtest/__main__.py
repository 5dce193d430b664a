import sys

from labelprob.tools.loadtest.command import main

sys.exit(main())
