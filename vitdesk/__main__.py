from vitdesk.offline import go_offline

go_offline()  # before anything else imports a hub library (cli.main does it again, harmlessly)

from vitdesk.cli import main  # noqa: E402

raise SystemExit(main())
