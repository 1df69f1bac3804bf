from cream.cli import main

raise SystemExit(main())
