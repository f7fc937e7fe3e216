import sys

from ecaplatform.cli.main import main

sys.exit(main())
