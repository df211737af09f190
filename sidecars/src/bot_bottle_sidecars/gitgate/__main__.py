from bot_bottle_sidecars.gitgate.daemon import main

raise SystemExit(main())
