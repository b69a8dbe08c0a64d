"""`python -m bench`: run the benchmark suite."""

from bench.suite import main

raise SystemExit(main())
