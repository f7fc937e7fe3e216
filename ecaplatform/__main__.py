import sys

from ecaplatform.cli import main

sys.exit(main())
