"""Allow ``python -m llama_swap``."""

from llama_swap.cli import main

raise SystemExit(main())
