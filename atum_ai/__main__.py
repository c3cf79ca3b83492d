from atum_ai.cli import main

raise SystemExit(main())
