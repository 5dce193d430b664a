import sys

from labelprob.tools.bench.command import main

sys.exit(main())
