from taskmuxctl.cli import main

raise SystemExit(main())
