import sys

from moerl.cli import main

sys.exit(main())
