import sys

from editgraph.serve.command import main

sys.exit(main())
