from taskmuxd.cli import main

raise SystemExit(main())
