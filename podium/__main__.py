import sys

from podium.tui.cli import main

sys.exit(main())
