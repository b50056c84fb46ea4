import sys

from probex.cli import main

sys.exit(main())
