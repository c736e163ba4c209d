"""`python -m gateway` is the `chert-gateway` command."""

from gateway.cli import main

raise SystemExit(main())
