import sys

from aiotcpstack.cli import main

sys.exit(main())
