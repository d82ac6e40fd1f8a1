from vitdesk.cli import main

raise SystemExit(main())
