from multipoint.cli import main

raise SystemExit(main())
