from stedq.cli import main

raise SystemExit(main())
