from kimi_dagster.simulator.cli import main

raise SystemExit(main())
